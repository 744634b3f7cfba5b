/**
 * A quick CLI: what `guestlink --version` and `--help` load is the program's shape (commander,
 * each command's options and help), not the session, the transports or the dependencies that
 * only running a command needs; `exec` over a Unix socket loads the session but no other
 * transport and no logger. Checked by the modules bin/guestlink loads, recorded by a loader hook
 * (`--import`), and mapped to the sources in each chunk by building the bundle the same way in
 * memory (scripts/cli-bundle.ts). Nothing here is timed.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { CLI_BUILD_OPTIONS } from "../../scripts/cli-bundle.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { guestlinkArgs } from "../helpers/bin.ts";
import { runCli } from "../helpers/cli.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The sources (src/… or the package name) in each file of the bundle, by its path in ROOT. */
async function bundleSources(): Promise<Map<string, Set<string>>> {
  const result = await build({
    ...CLI_BUILD_OPTIONS,
    absWorkingDir: ROOT,
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  const sources = new Map<string, Set<string>>();
  for (const [output, { inputs }] of Object.entries(result.metafile.outputs)) {
    sources.set(output, new Set(Object.keys(inputs).map(sourceName)));
  }
  return sources;
}

/** `src/session/session.ts` as it is; `…/node_modules/pino/lib/tools.js` as `pino`. */
function sourceName(input: string): string {
  const at = input.lastIndexOf("node_modules/");
  if (at < 0) return input;
  const [scope, name] = input.slice(at + "node_modules/".length).split("/");
  return scope?.startsWith("@") ? `${scope}/${name}` : (scope ?? input);
}

/** A loader hook that appends the URL of every module loaded to `log`, one a line. */
function recorder(log: string): string {
  const hooks = `import { appendFileSync } from "node:fs";
export async function load(url, context, next) {
  appendFileSync(${JSON.stringify(log)}, url + "\\n");
  return next(url, context);
}`;
  const register = `import { register } from "node:module";
register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
  return `data:text/javascript,${encodeURIComponent(register)}`;
}

interface Loaded {
  /** The files of the bundle it loaded, by path in ROOT. */
  files: string[];
  /** The sources in those files. */
  sources: Set<string>;
  stdout: string;
}

describe("what the CLI loads to start", () => {
  let dir: string;
  let chunks: Map<string, Set<string>>;
  let agent: AgentProcess;
  let runs = 0;

  before(async () => {
    guestlinkArgs([]); // refuses a build older than src/
    dir = await mkdtemp(join(tmpdir(), "guestlink-startup-"));
    chunks = await bundleSources();
    agent = await startAgent(join(dir, "agent.sock"));
  });
  after(async () => {
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `guestlink ARGS…` as users do, recording what it loads. */
  async function loads(args: readonly string[]): Promise<Loaded> {
    const log = join(dir, `loaded-${++runs}.txt`);
    const { code, stdout, stderr } = await runCli(args, { nodeArgs: ["--import", recorder(log)] });
    assert.equal(code, 0, `guestlink ${args.join(" ")} failed: ${stderr}`);
    const urls = (await readFile(log, "utf8")).split("\n").filter((u) => u.startsWith("file:"));
    const files = urls
      .map((u) => relative(ROOT, fileURLToPath(u)))
      .filter((f) => f.startsWith("dist/bundle/"));
    const sources = new Set<string>();
    for (const file of files) {
      const inFile = chunks.get(file);
      assert.ok(inFile, `${file} is not in a fresh build of the CLI: run \`npm run build\``);
      for (const s of inFile) sources.add(s);
    }
    return { files, sources, stdout };
  }

  /** Sources that only running a command needs: none of them may load for --version or --help. */
  function heavy(sources: Set<string>): string[] {
    return [...sources].filter(
      (s) =>
        /^src\/(session|wire|supervise|platform|agent\/(?!drain|telemetry-interval))\//.test(s) ||
        // Parsing an address is text; connecting to one is not.
        (/^src\/transport\//.test(s) && !/\/(nats-)?address\.ts$/.test(s)) ||
        /^src\/(daemon\/(?!paths)|controller\/(?!run\/outcome|mediator\/(table|submit|contract)))/.test(
          s,
        ) ||
        // commander is the program; every other dependency is some command's.
        (!s.startsWith("src/") && s !== "commander"),
    );
  }

  for (const args of [["--version"], ["--help"], ["exec", "--help"]]) {
    it(`guestlink ${args.join(" ")} loads no session, transport or dependency but commander`, async () => {
      const { files, sources, stdout } = await loads(args);
      assert.ok(stdout.length > 0, "it printed nothing");
      assert.ok(sources.has("commander"), "the recorder saw none of the program: is it working?");
      assert.deepEqual(heavy(sources), [], `loaded ${files.join(", ")}`);
    });
  }

  it("guestlink exec unix:… -- true loads the session, and no other transport and no logger", async () => {
    const { sources } = await loads(["exec", agent.address, "--", "true"]);
    for (const needed of ["src/session/session.ts", "src/transport/unix.ts", "msgpackr"]) {
      assert.ok(sources.has(needed), `${needed} was not loaded: is the recorder working?`);
    }
    const unneeded = [
      "pino",
      "yaml",
      "@nats-io/transport-node",
      "src/transport/mailbox.ts",
      "src/transport/nats.ts",
      "src/transport/serial.ts",
      "src/transport/vsock.ts",
      "src/transport/tls.ts",
      "src/daemon/client.ts",
      "src/agent/exec.ts",
    ].filter((s) => sources.has(s));
    assert.deepEqual(unneeded, []);
  });
});
