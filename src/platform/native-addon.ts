/**
 * Finding guestlink's native addons (`native/*.c`, built at install time by
 * `scripts/build-native.mjs` into `native/build/Release/`). Each is looked for, in order:
 *
 * 1. at its environment variable, when that is set (and nowhere else then);
 * 2. beside this module and in each folder above it (up to the package root): the file itself,
 *    and `native/build/Release/` there. That finds it next to the bundled agent
 *    (`dist/guestlink-agent.cjs` with the `.node` files copied beside it: how a guest without
 *    node_modules gets them), from the bundled CLI (`dist/bundle/`, a folder below the copies in
 *    `dist/`), from tsc's output (`dist/…/`) and from the sources (`src/…/`).
 *
 * Addons are loaded with `createRequire`, so bundlers leave them alone.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the build puts the addons, relative to the package root. */
export const ADDON_BUILD_DIR = "native/build/Release";
/** Folders above this module looked in: src/platform/ and dist/bundle/ reach the root. */
const LEVELS_UP = 3;

/** The folder of this module, or of the bundle it was built into (where `import.meta` is empty). */
export function moduleDir(): string {
  const url = (import.meta as { url?: string }).url;
  if (typeof url === "string") return dirname(fileURLToPath(url));
  return typeof __dirname === "string" ? __dirname : process.cwd();
}

/** Where `file` is looked for, in order; `override` (an environment variable's value) alone if set. */
export function addonCandidates(file: string, override: string | undefined): string[] {
  if (override !== undefined && override !== "") return [override];
  const out: string[] = [];
  let dir = moduleDir();
  for (let level = 0; level <= LEVELS_UP; level++) {
    out.push(join(dir, file), join(dir, ADDON_BUILD_DIR, file));
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return out;
}

/** The first candidate that exists, or undefined. */
export function findAddon(candidates: readonly string[]): string | undefined {
  return candidates.find((p) => existsSync(p));
}

/** Loads the addon at `path` (throws what `require` throws). */
export function requireAddon(path: string): unknown {
  return createRequire(join(moduleDir(), "native-addon.cjs"))(path);
}
