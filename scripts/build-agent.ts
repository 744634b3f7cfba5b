/**
 * Bundles the agent into one file, dist/guestlink-agent.cjs, that runs with plain `node` (20 or
 * newer) and no node_modules: what the VM tests put into a guest. msgpackr's optional native
 * extension and the optional SIMD CRC-32 are left out (they fall back to JavaScript and zlib). The native
 * addons (vsock, spawn), when they were built, are copied next to the bundle, where the bundled
 * agent looks for them first; copy them into a guest with it to use `vsock:`, posix_spawn and
 * `exec -t` there.
 *
 * The NATS client is a file of its own, dist/guestlink-agent-nats.cjs, which the agent loads only
 * when it is given a `nats:` address: a guest without NATS needs neither the file nor its bytes.
 * Copy it next to the agent to use `nats:` there.
 */
import { copyFileSync, existsSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { build, type Plugin } from "esbuild";
import { SPAWN_ADDON_FILE } from "../src/agent/spawn-native.ts";
import { ADDON_BUILD_DIR } from "../src/platform/native-addon.ts";
import { SLAB_ADDON_FILE } from "../src/platform/slabs.ts";
import { VSOCK_ADDON_FILE } from "../src/transport/vsock-addon.ts";

const outfile = "dist/guestlink-agent.cjs";
const natsFile = "guestlink-agent-nats.cjs";
/** `import("@nats-io/transport-node")` (nats-connect.ts) loads the file next to the bundle. */
const natsBesideTheAgent: Plugin = {
  name: "nats-beside-the-agent",
  setup(b) {
    b.onResolve({ filter: /^@nats-io\/transport-node$/ }, (args) =>
      args.importer.endsWith("nats-connect.ts")
        ? { path: `./${natsFile}`, external: true }
        : undefined,
    );
  },
};
await build({
  entryPoints: { [natsFile.replace(/\.cjs$/, "")]: "@nats-io/transport-node" },
  outdir: "dist",
  outExtension: { ".js": ".cjs" },
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  legalComments: "none",
  logLevel: "warning",
});
await build({
  plugins: [natsBesideTheAgent],
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
console.log(
  `dist/${natsFile}: ${kib(`dist/${natsFile}`)} (the NATS client, loaded for nats: only)`,
);

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
    file: SLAB_ADDON_FILE,
    what: "the slab addon: read buffers used again once collected",
    without: "read buffers from Node alone",
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
    // A new file renamed over the old one: a running agent keeps the file it loaded. Copied in
    // place, the library mapped into it changes under it, and it dies of SIGBUS at its next exec.
    copyFileSync(built, `${copy}.tmp`);
    renameSync(`${copy}.tmp`, copy);
    console.log(`${copy}: ${kib(copy)} (${what})`);
  } else {
    rmSync(copy, { force: true });
    console.log(`${copy}: not built (no C toolchain at install), so the bundle has ${without}`);
  }
}
