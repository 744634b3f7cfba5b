#!/usr/bin/env node
/**
 * Builds guestlink's AF_VSOCK addon (native/vsock.c → native/build/Release/guestlink_vsock.node)
 * with node-gyp; run at install time. The addon is optional: when it cannot be built (not Linux,
 * no compiler, no Python, no Node headers) this prints one warning line and exits 0, and
 * `vsock:` addresses then fail with TRANSPORT_UNSUPPORTED saying how to build it. The full
 * node-gyp output goes to native/build-native.log.
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
const output = join(native, "build", "Release", "guestlink_vsock.node");
const log = join(native, "build-native.log");

function warn(why) {
  process.stderr.write(
    `guestlink: the vsock addon was not built (${why}); vsock: addresses will fail until it is (node scripts/build-native.mjs)\n`,
  );
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
if (process.platform !== "linux") warn(`AF_VSOCK is Linux only, this is ${process.platform}`);
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
const run = spawnSync(process.execPath, args, { cwd: root, encoding: "utf8" });
writeFileSync(log, `${process.execPath} ${args.join(" ")}\n${run.stdout ?? ""}${run.stderr ?? ""}`);
if (run.error !== undefined) warn(`cannot run node-gyp: ${run.error.message}`);
if (run.status !== 0 || !existsSync(output)) {
  warn(
    `${diagnose(`${run.stdout ?? ""}${run.stderr ?? ""}`, run.status)}; see native/build-native.log`,
  );
}
process.stderr.write(`guestlink: built the vsock addon: ${output}\n`);
