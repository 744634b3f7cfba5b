/**
 * How the CLI is bundled (build-cli.ts builds it): one file for what every command needs and
 * chunks for what a command loads when it runs. Shared with test/cli/startup.test.ts, which
 * builds the same way in memory to learn which sources each chunk holds.
 */
import type { BuildOptions, Plugin } from "esbuild";

export const CLI_BUNDLE_DIR = "dist/bundle";

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

export const CLI_BUILD_OPTIONS = {
  entryPoints: { guestlink: "src/cli/main.ts" },
  outdir: CLI_BUNDLE_DIR,
  outExtension: { ".js": ".mjs" },
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  plugins: [withoutMsgpackrExtract],
  external: ["@node-rs/crc32", "bufferutil", "utf-8-validate"],
  // The bundled CommonJS dependencies call require(); an ES module has none of its own.
  banner: {
    js: 'import { createRequire as __guestlinkRequire } from "node:module"; const require = __guestlinkRequire(import.meta.url);',
  },
  legalComments: "none",
  logLevel: "warning",
} satisfies BuildOptions;
