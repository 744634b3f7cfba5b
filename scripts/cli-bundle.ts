/**
 * How the CLI is bundled (build-cli.ts builds it): one CommonJS file, dist/bundle/guestlink.cjs,
 * that bin/guestlink compiles with V8's code cache (Node 20 has none for ES modules). What a
 * command needs only when it runs stays behind `import()`, which esbuild turns into a function
 * run on the first call: such a module's code is read but neither compiled nor run by the
 * commands that do not use it. Shared with test/cli/startup.test.ts, which builds the same way
 * with each module recording that it ran.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { BuildOptions, Plugin } from "esbuild";

export const CLI_BUNDLE_DIR = "dist/bundle";
export const CLI_BUNDLE_FILE = `${CLI_BUNDLE_DIR}/guestlink.cjs`;

/**
 * msgpackr's optional native string extractor, left out as the bundled agent leaves it out:
 * finding and loading it (node-gyp-build's search, dlopen) cost 7-10 ms of every `exec`'s start
 * on this machine, and it would speed up only the general decoding path for strings, which
 * control payloads rarely take (wire/control-decode-fast.ts reads them first).
 */
const withoutMsgpackrExtract: Plugin = {
  name: "without-msgpackr-extract",
  setup(b) {
    b.onResolve({ filter: /^msgpackr-extract$/ }, () => ({
      path: "msgpackr-extract",
      namespace: "absent",
    }));
    b.onLoad({ filter: /.*/, namespace: "absent" }, () => ({
      contents: "module.exports = undefined;",
    }));
  },
};

/**
 * commander requires child_process at its top, for subcommands that are executables of their
 * own, which guestlink has none of: loading it (and dgram, which it pulls) cost 4-6 ms of every
 * start here. It is required when commander would spawn, should it ever.
 */
export const COMMANDER_EAGER_CHILD_PROCESS = "const childProcess = require('node:child_process');";
const commanderWithoutChildProcess: Plugin = {
  name: "commander-without-child-process",
  setup(b) {
    b.onLoad({ filter: /[\\/]commander[\\/]lib[\\/]command\.js$/ }, async (args) => {
      const text = await readFile(args.path, "utf8");
      if (!text.includes(COMMANDER_EAGER_CHILD_PROCESS)) {
        return {
          contents: text,
          warnings: [
            {
              text: "commander no longer requires child_process as cli-bundle.ts knows: it is loaded at every start",
            },
          ],
        };
      }
      return {
        contents: text.replace(
          COMMANDER_EAGER_CHILD_PROCESS,
          "const childProcess = { spawn: (...args) => require('node:child_process').spawn(...args) };",
        ),
      };
    });
  },
};

/**
 * Packages the bundle requires from node_modules when a command loads them (CLI_BUILD_OPTIONS).
 * Each must be reached by `require` (a static import in a module the bundle initializes late):
 * the bundle runs in a vm.Script, where an `import()` of a module outside it fails (and asking
 * Node's loader for one is experimental in Node 20, with a warning), so the NATS client, which
 * nats-connect.ts imports with import(), stays in the bundle. build-cli.ts checks.
 */
export const LOADED_BY_LONG_COMMANDS = ["hdr-histogram-js", "ws", "prom-client", "pino"];

/** Why `bundle` (the CLI's, as built) would fail to load one of LOADED_BY_LONG_COMMANDS, or undefined. */
export function unloadableExternal(bundle: string): string | undefined {
  const imported = LOADED_BY_LONG_COMMANDS.find((name) => bundle.includes(`import("${name}`));
  return imported === undefined
    ? undefined
    : `the CLI bundle loads ${imported} with import(), which fails in the vm.Script that runs it: leave ${imported} in the bundle, or load it with a static import`;
}

/** What both builds of the CLI share. */
const COMMON_OPTIONS = {
  bundle: true,
  platform: "node",
  target: "node20",
  plugins: [withoutMsgpackrExtract, commanderWithoutChildProcess],
  external: ["@node-rs/crc32", "bufferutil", "utf-8-validate"],
  legalComments: "none",
  logLevel: "warning",
} satisfies BuildOptions;

export const CLI_BUILD_OPTIONS = {
  ...COMMON_OPTIONS,
  entryPoints: ["src/cli/main.ts"],
  outfile: CLI_BUNDLE_FILE,
  format: "cjs",
  // The modules that find files beside themselves (native addons, the dashboard) ask
  // import.meta.url, which CommonJS has not: the bundle's own URL stands in.
  define: { "import.meta.url": "__guestlinkBundleUrl" },
  // The sources are ES modules, strict throughout; the banner comes before esbuild's own "use
  // strict", which would then be an expression and leave the file sloppy.
  banner: {
    js: '"use strict"; var __guestlinkBundleUrl = require("node:url").pathToFileURL(__filename).href;',
  },
  // Dependencies that only some long-running commands load, when they run, are required from
  // node_modules instead of being read at every start: hdr-histogram-js with pako (fleet runs),
  // ws and prom-client with OpenTelemetry's API (the daemon), pino (logs). test/cli/startup.test.ts
  // checks that exec, --help and --version load none of them.
  external: [...COMMON_OPTIONS.external, ...LOADED_BY_LONG_COMMANDS],
  // Less to read and to deserialize at every start (see build-cli.ts's line for the size).
  // Names are kept (errors' and classes' names, stack traces); the line and column of a
  // whitespace-minified bundle told nothing before either. No comments: esbuild escapes every
  // other character above ASCII, so bin/guestlink reads the file as Latin-1, 2-3 times faster
  // than as UTF-8 (build-cli.ts checks).
  minify: true,
  keepNames: true,
} satisfies BuildOptions;

/**
 * `guestlink agent` runs from ES module chunks instead (bin/guestlink picks them for it): an agent
 * runs for long, gains nothing from a quick start, and the one bundle costs memory to compile
 * whole (measured in a bare node: reading it 3.1 MB, compiling it 4.4, running its top 2.5): the
 * agent's peak while streaming 4 GiB went from 91-93 MiB to 96-103, against issue 19's bound of
 * 100. With chunks it compiles only the agent's code, as before the one bundle.
 */
export const AGENT_BUILD_OPTIONS = {
  ...COMMON_OPTIONS,
  entryPoints: { guestlink: "src/cli/main.ts" },
  outdir: CLI_BUNDLE_DIR,
  outExtension: { ".js": ".mjs" },
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  format: "esm",
  // The bundled CommonJS dependencies call require(); an ES module has none of its own.
  banner: {
    js: 'import { createRequire as __guestlinkRequire } from "node:module"; const require = __guestlinkRequire(import.meta.url);',
  },
} satisfies BuildOptions;

/**
 * The file bin/guestlink runs, from esbuild's output: a first line naming the build (a hash of
 * the rest), which a code cache must have been made for. Throws on a byte above ASCII, since
 * bin/guestlink reads the file as Latin-1.
 */
export function cliBundleFile(body: Uint8Array): { contents: Buffer; id: string } {
  const above = body.findIndex((byte) => byte > 0x7f);
  if (above >= 0) {
    const around = Buffer.from(body.subarray(Math.max(0, above - 60), above + 20)).toString();
    throw new Error(`the CLI bundle has a byte above ASCII at ${above}: ${around}`);
  }
  const id = createHash("sha256").update(body).digest("base64url").slice(0, 22);
  return { contents: Buffer.concat([Buffer.from(`//guestlink-build ${id}\n`), body]), id };
}
