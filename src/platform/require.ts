/**
 * Loading what a module needs only sometimes, when it first needs it. `lazyRequire`: `require`
 * for a builtin or an optional package, the module's own in a CommonJS bundle (the agent's, where
 * `import.meta` is empty), one made from `import.meta.url` in an ES module (tsc's output, tsx).
 * `loadOnce`: an `import()` made on the first call, the same promise after.
 */
import { createRequire } from "node:module";

export const lazyRequire: NodeJS.Require =
  typeof require === "function" ? require : createRequire(import.meta.url);

/** `load()` on the first call, and the same promise on every call after. */
export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    loaded ??= load();
    return loaded;
  };
}
