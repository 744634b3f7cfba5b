#!/usr/bin/env node
/**
 * Builds guestlink's native addons with node-gyp; run at install time:
 *
 * - native/vsock.c → native/build/Release/guestlink_vsock.node: AF_VSOCK (`vsock:` addresses);
 * - native/spawn.c → native/build/Release/guestlink_spawn.node: the agent's spawner (posix_spawn,
 *   real pipes, pseudo-terminals for `exec -t`);
 * - native/slab.c → native/build/Release/guestlink_slab.node: read buffers used again once the
 *   garbage collector freed them (src/platform/slabs.ts).
 *
 * All are optional: when one cannot be built (not Linux, no compiler, no Python, no Node
 * headers) this prints one warning line for it and exits 0. Without the vsock addon `vsock:`
 * addresses fail with TRANSPORT_UNSUPPORTED saying how to build it; without the spawner the agent
 * starts commands with Node's child_process and `exec -t` fails with TTY_UNSUPPORTED; without the
 * slab addon read buffers are Node's own. Each is built apart (make -k), so one failing leaves
 * the others. The full node-gyp output goes to native/build-native.log.
 *
 * Plain JavaScript with no dependencies: install scripts may run before devDependencies exist.
 *   node scripts/build-native.mjs        GUESTLINK_SKIP_NATIVE=1 skips it
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const native = join(root, "native");
const log = join(native, "build-native.log");
/** Each addon: its file, and what is missing without it. */
const ADDONS = [
  { file: "guestlink_vsock.node", name: "vsock addon", without: "vsock: addresses will fail" },
  {
    file: "guestlink_slab.node",
    name: "slab addon",
    without: "read buffers a stream's reader keeps go back to the system, and are faulted in anew",
  },
  {
    file: "guestlink_spawn.node",
    name: "spawn addon",
    without:
      "the agent starts commands with child_process (slower in a big agent) and exec -t fails",
  },
];
const output = (addon) => join(native, "build", "Release", addon.file);

function warnOne(addon, why) {
  process.stderr.write(
    `guestlink: the ${addon.name} was not built (${why}); ${addon.without} until it is (node scripts/build-native.mjs)\n`,
  );
}

function warn(why) {
  for (const addon of ADDONS) warnOne(addon, why);
  process.exit(0);
}

/** node-gyp: the one npm runs scripts with, else the one bundled with npm, else a local one. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      "..",
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    ),
  ];
  for (const candidate of candidates) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  try {
    return createRequire(join(root, "package.json")).resolve("node-gyp/bin/node-gyp.js");
  } catch {
    return undefined;
  }
}

/** The one reason worth a line, out of node-gyp's output. */
function diagnose(text, status) {
  if (/find Python/.test(text) && /You need to install|could not be run/.test(text)) {
    return "node-gyp found no Python: install python3";
  }
  if (
    /gyp http GET/.test(text) &&
    /(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network)/.test(text)
  ) {
    return "Node's headers are not installed and could not be downloaded: install them (e.g. the nodejs-dev package) or set npm_config_nodedir";
  }
  const missing = /No such file or directory: '([^']+)'|(\S+): (?:command )?not found/.exec(text);
  if (missing !== null) return `no ${missing[1] ?? missing[2]}: install a C compiler and make`;
  const compiler = /^.*\berror: .*$/m.exec(text);
  if (compiler !== null) return compiler[0].trim().slice(0, 200);
  const first = text
    .split("\n")
    .find(
      (l) =>
        l.startsWith("gyp ERR!") &&
        !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l),
    );
  return (
    first
      ?.replace(/^gyp ERR! /, "")
      .trim()
      .slice(0, 200) ?? `node-gyp exited with ${status}`
  );
}

if (process.env.GUESTLINK_SKIP_NATIVE) warn("GUESTLINK_SKIP_NATIVE is set");
if (process.platform !== "linux") warn(`they are Linux only, this is ${process.platform}`);
if (!existsSync(join(native, "binding.gyp"))) warn("native/binding.gyp is missing");
const nodeGyp = findNodeGyp();
if (nodeGyp === undefined) warn("node-gyp not found: install npm, or node-gyp");

const args = [nodeGyp, "rebuild", `--directory=${native}`];
// Build against the headers installed with this Node when there are any, instead of
// downloading them (npm passes its own `nodedir` setting in npm_config_nodedir).
const prefix = join(dirname(process.execPath), "..");
if (!process.env.npm_config_nodedir && existsSync(join(prefix, "include", "node", "node_api.h"))) {
  args.push(`--nodedir=${prefix}`);
}
// -k: an addon that fails to compile does not stop the other one being built.
const run = spawnSync(process.execPath, args, {
  cwd: root,
  encoding: "utf8",
  env: { ...process.env, MAKEFLAGS: `${process.env.MAKEFLAGS ?? ""} -k`.trim() },
});
writeFileSync(log, `${process.execPath} ${args.join(" ")}\n${run.stdout ?? ""}${run.stderr ?? ""}`);
if (run.error !== undefined) warn(`cannot run node-gyp: ${run.error.message}`);
const why = `${diagnose(`${run.stdout ?? ""}${run.stderr ?? ""}`, run.status)}; see native/build-native.log`;
for (const addon of ADDONS) {
  if (existsSync(output(addon))) {
    process.stderr.write(`guestlink: built the ${addon.name}: ${output(addon)}\n`);
  } else {
    warnOne(addon, why);
  }
}
