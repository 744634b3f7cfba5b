/**
 * Bundles the CLI for a quick start: `bin/guestlink` loads dist/bundle/guestlink.mjs, one file
 * for what every command needs, and chunks beside it for what only some load when they run (the
 * daemon, the mediator, fleet runs, the demo, the agent's services). Measured on this machine
 * (2 cores): `guestlink --version` 0.43-0.56 s from dist/cli/ (tsc's output, about 200 modules),
 * 0.16-0.22 s from the bundle; `node -e 0` 0.08-0.11 s.
 *
 * Dependencies are bundled too, except native modules (loaded from node_modules when present;
 * msgpackr's string extractor is left out, see below) and the YAML reader, which
 * config-file.ts loads when a file is read.
 */
import { statSync } from "node:fs";
import { build, type Plugin } from "esbuild";

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

const outdir = "dist/bundle";
const result = await build({
  entryPoints: { guestlink: "src/cli/main.ts" },
  outdir,
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
  metafile: true,
});
const outputs = Object.keys(result.metafile.outputs);
const kib = (path: string) => (statSync(path).size / 1024).toFixed(0);
const entry = `${outdir}/guestlink.mjs`;
console.log(`${entry}: ${kib(entry)} KiB, with ${outputs.length - 1} chunks in ${outdir}/chunks`);
