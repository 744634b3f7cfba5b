/**
 * `require`, for what a module loads only when it needs it (a builtin, an optional package): the
 * module's own in a CommonJS bundle (the agent's, where `import.meta` is empty), one made from
 * `import.meta.url` in an ES module (tsc's output, tsx).
 */
import { createRequire } from "node:module";

export const lazyRequire: NodeJS.Require =
  typeof require === "function" ? require : createRequire(import.meta.url);
