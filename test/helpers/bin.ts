/**
 * bin/guestlink, as users run it (the CLI bundle in dist/bundle/): what the CLI and agent tests
 * start. `npm test` builds first; a test file run on its own after a change to src/ needs
 * `npm run build`, and is told so rather than testing the old build.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const GUESTLINK_BIN = join(ROOT, "bin", "guestlink");
/** The CLI's bundle, and the agent's entry beside it (bin/guestlink runs `agent` from that). */
const BUNDLES = [
  join(ROOT, "dist", "bundle", "guestlink.cjs"),
  join(ROOT, "dist", "bundle", "guestlink.mjs"),
];

function newestIn(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestIn(path) : statSync(path).mtimeMs);
  }
  return newest;
}

let checked = false;

/** Throws, saying what to do, when the bundle is missing or older than a file in src/. */
export function assertBuilt(): void {
  if (checked) return;
  let built = Number.POSITIVE_INFINITY;
  for (const bundle of BUNDLES) {
    try {
      built = Math.min(built, statSync(bundle).mtimeMs);
    } catch {
      throw new Error(
        `${bundle} is missing: run \`npm run build\` (npm test does) before this test`,
      );
    }
  }
  if (newestIn(join(ROOT, "src")) > built) {
    throw new Error(
      "src/ changed since the last build, and the CLI tests run the build: run `npm run build` (npm test does)",
    );
  }
  checked = true;
}

/** The argv (after node) that runs `guestlink ARGS…`, checking the build first. */
export function guestlinkArgs(args: readonly string[]): string[] {
  assertBuilt();
  return [GUESTLINK_BIN, ...args];
}
