/**
 * Bundles the agent into one file, dist/guestlink-agent.cjs, that runs with plain `node` (20 or
 * newer) and no node_modules: what the VM tests put into a guest. msgpackr's optional native
 * extension and the optional SIMD CRC-32 are left out (they fall back to JavaScript and zlib). The native
 * addons (vsock, spawn), when they were built, are copied next to the bundle, where the bundled
 * agent looks for them first; copy them into a guest with it to use `vsock:`, posix_spawn and
 * `exec -t` there.
 */
import { copyFileSync, existsSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { SPAWN_ADDON_FILE } from "../src/agent/spawn-native.ts";
import { ADDON_BUILD_DIR } from "../src/platform/native-addon.ts";
import { VSOCK_ADDON_FILE } from "../src/transport/vsock-addon.ts";

const outfile = "dist/guestlink-agent.cjs";
await build({
  entryPoints: ["src/cli/agent-main.ts"],
  outfile,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  // Native addons cannot be bundled: msgpackr and the CRC fall back to JavaScript and zlib.
  external: ["msgpackr-extract", "@node-rs/crc32"],
  banner: { js: "#!/usr/bin/env node" },
  legalComments: "none",
  logLevel: "warning",
});
const kib = (path: string) => `${(statSync(path).size / 1024).toFixed(0)} KiB`;
console.log(`${outfile}: ${kib(outfile)}`);

// The addons, when they were built, go next to the bundle, where the bundled agent (and the
// bundled CLI, two folders below) look for them first. A stale copy would be loaded in place of
// none: better to say it is unavailable.
const addons = [
  {
    file: VSOCK_ADDON_FILE,
    what: "the vsock addon, for vsock: in the bundled agent",
    without: "no vsock:",
  },
  {
    file: SPAWN_ADDON_FILE,
    what: "the spawn addon: posix_spawn, real pipes and exec -t in the bundled agent",
    without: "commands start through child_process and exec -t is unavailable",
  },
];
for (const { file, what, without } of addons) {
  const built = join(ADDON_BUILD_DIR, file);
  const copy = join("dist", file);
  if (existsSync(built)) {
    copyFileSync(built, copy);
    console.log(`${copy}: ${kib(copy)} (${what})`);
  } else {
    rmSync(copy, { force: true });
    console.log(`${copy}: not built (no C toolchain at install), so the bundle has ${without}`);
  }
}
