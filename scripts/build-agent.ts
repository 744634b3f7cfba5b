/**
 * Bundles the agent into one file, dist/guestlink-agent.cjs, that runs with plain `node` (20 or
 * newer) and no node_modules: what the VM tests put into a guest. msgpackr's optional native
 * extension and the optional SIMD CRC-32 are left out (they fall back to JavaScript and zlib). The vsock addon, when
 * it was built, is copied next to the bundle, where the bundled agent looks for it first; copy
 * both files into a guest to use `vsock:` there.
 */
import { copyFileSync, existsSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { VSOCK_ADDON_BUILD_PATH, VSOCK_ADDON_FILE } from "../src/transport/vsock-addon.ts";

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

const addon = join("dist", VSOCK_ADDON_FILE);
if (existsSync(VSOCK_ADDON_BUILD_PATH)) {
  copyFileSync(VSOCK_ADDON_BUILD_PATH, addon);
  console.log(`${addon}: ${kib(addon)} (the vsock addon, for vsock: in the bundled agent)`);
} else {
  // A stale copy would be loaded in place of none: better to say vsock: is unavailable.
  rmSync(addon, { force: true });
  console.log(`${addon}: not built (no C toolchain at install), so the bundle has no vsock:`);
}
