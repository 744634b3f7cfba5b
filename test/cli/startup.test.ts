/**
 * A quick CLI. What `guestlink --version` and `--help` run is the program's shape (commander,
 * each command's options and help), not the session, the transports or the dependencies that
 * only running a command needs; `exec` over a Unix socket runs the session but no other
 * transport and no logger. Checked by building the bundle as scripts/cli-bundle.ts does, with
 * each module recording that it ran, and starting it through bin/guestlink. And bin/guestlink's
 * code cache: written, used, replaced when it was made for another build, refused when it is
 * damaged, and left alone in a folder others may write. Nothing here is timed.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { build, type Loader, type Plugin } from "esbuild";
import {
  CLI_BUILD_OPTIONS,
  cliBundleFile,
  LOADED_BY_LONG_COMMANDS,
} from "../../scripts/cli-bundle.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { guestlinkArgs } from "../helpers/bin.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUNDLE_DIR = join(ROOT, "dist", "bundle");

/** `src/session/session.ts` as it is; `…/node_modules/pino/lib/tools.js` as `pino`. */
function sourceName(path: string): string {
  const at = path.lastIndexOf("node_modules/");
  if (at < 0) return relative(ROOT, path);
  const [scope, name] = path.slice(at + "node_modules/".length).split("/");
  return scope?.startsWith("@") ? `${scope}/${name}` : (scope ?? path);
}

/** Each module, when it runs, adds its source's name to `globalThis.__guestlinkRan`. */
const recordRuns: Plugin = {
  name: "record-runs",
  setup(b) {
    b.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
      const text = await readFile(args.path, "utf8");
      const record = `(globalThis.__guestlinkRan ??= new Set()).add(${JSON.stringify(sourceName(args.path))});\n`;
      const hashbang = text.startsWith("#!") ? text.indexOf("\n") + 1 : 0;
      const ext = args.path.slice(args.path.lastIndexOf(".") + 1);
      return {
        contents: text.slice(0, hashbang) + record + text.slice(hashbang),
        loader: (ext.endsWith("ts") ? "ts" : "js") as Loader,
      };
    });
  },
};

/** bin/guestlink and a bundle beside it as the build lays them out, in `dir`. */
async function install(dir: string, plugins: Plugin[]): Promise<void> {
  const result = await build({
    ...CLI_BUILD_OPTIONS,
    plugins: [...CLI_BUILD_OPTIONS.plugins, ...plugins],
    absWorkingDir: ROOT,
    write: false,
    logLevel: "silent",
  });
  const [output] = result.outputFiles;
  assert.ok(output);
  await mkdir(join(dir, "bin"), { recursive: true });
  await mkdir(join(dir, "dist", "bundle"), { recursive: true });
  await writeFile(
    join(dir, "dist", "bundle", "guestlink.cjs"),
    cliBundleFile(output.contents).contents,
  );
  for (const file of ["guestlink", "package.json"]) {
    await copyFile(join(ROOT, "bin", file), join(dir, "bin", file));
  }
  // The package's own (bin/guestlink answers --version from it), and the dependencies the bundle
  // leaves out (LOADED_BY_LONG_COMMANDS), found as in a package.
  await copyFile(join(ROOT, "package.json"), join(dir, "package.json"));
  await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node DIR/bin/guestlink ARGS…` with `env` added. */
function run(
  dir: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: readonly string[] = [],
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...nodeArgs, join(dir, "bin", "guestlink"), ...args],
      { env: { ...process.env, ...env } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : null;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("what the CLI runs to start", () => {
  let dir: string;
  let agent: AgentProcess;
  let runs = 0;

  before(async () => {
    guestlinkArgs([]); // refuses a build older than src/
    dir = await mkdtemp(join(tmpdir(), "guestlink-startup-"));
    await install(join(dir, "recorded"), [recordRuns]);
    agent = await startAgent(join(dir, "agent.sock"));
  });
  after(async () => {
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `guestlink ARGS…`, returning the sources of the modules that ran. */
  async function ran(
    args: readonly string[],
  ): Promise<{ sources: Set<string>; builtins: Set<string>; stdout: string }> {
    const log = join(dir, `ran-${++runs}.json`);
    const recorder = join(dir, `recorder-${runs}.cjs`);
    await writeFile(
      recorder,
      `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(log)}, JSON.stringify({ ran: [...(globalThis.__guestlinkRan ?? [])], required: Object.keys(require.cache), builtins: process.moduleLoadList })));`,
    );
    const { code, stdout, stderr } = await run(
      join(dir, "recorded"),
      args,
      { GUESTLINK_CODE_CACHE: "off" },
      ["--require", recorder],
    );
    assert.equal(code, 0, `guestlink ${args.join(" ")} failed: ${stderr}`);
    const recorded = JSON.parse(await readFile(log, "utf8")) as {
      ran: string[];
      required: string[];
      builtins: string[];
    };
    // "NativeModule zlib" as zlib
    const modules = recorded.builtins.map((b) => b.replace(/^NativeModule /, ""));
    // What the bundle ran, and the packages it required from node_modules (LOADED_BY_LONG_COMMANDS).
    const required = recorded.required.filter((p) => p.includes("node_modules/")).map(sourceName);
    return { sources: new Set([...recorded.ran, ...required]), builtins: new Set(modules), stdout };
  }

  /** Sources that only running a command needs: none of them may run for --version or --help. */
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

  it("guestlink --version is answered by bin/guestlink alone: the bundle is not read", async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as {
      version: string;
    };
    for (const args of [["--version"], ["-V"]]) {
      const { sources, builtins, stdout } = await ran(args);
      assert.equal(stdout, `${version}\n`);
      assert.deepEqual([...sources], [], "the bundle ran");
      assert.ok(builtins.has("fs"), "the recorder saw no builtin: is it working?");
      assert.ok(!builtins.has("vm"), "the bundle was compiled");
    }
    // With anything else beside it, the program answers, with the same version.
    const { sources, stdout } = await ran(["--version", "--verbose"]);
    assert.equal(stdout, `${version}\n`);
    assert.ok(sources.has("commander"), "the program did not answer --version --verbose");
  });

  for (const args of [["--version", "--verbose"], ["--help"], ["exec", "--help"]]) {
    it(`guestlink ${args.join(" ")} runs no session, transport or dependency but commander`, async () => {
      const { sources, builtins, stdout } = await ran(args);
      assert.ok(stdout.length > 0, "it printed nothing");
      assert.ok(sources.has("commander"), "the recorder saw none of the program: is it working?");
      assert.deepEqual(heavy(sources), []);
      // commander's, for executable subcommands: loaded only if it would spawn one.
      assert.ok(!builtins.has("child_process"), "child_process was loaded");
    });
  }

  it("guestlink exec unix:… -- true runs the session, and no other transport and no logger", async () => {
    const { sources, builtins } = await ran(["exec", agent.address, "--", "true"]);
    for (const needed of ["src/session/session.ts", "src/transport/unix.ts", "msgpackr"]) {
      assert.ok(sources.has(needed), `${needed} did not run: is the recorder working?`);
    }
    const unneeded = [
      ...LOADED_BY_LONG_COMMANDS,
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
    // crypto for a few random ids (platform/random.ts), zlib for the CRC of large transfers only.
    assert.ok(builtins.has("net"), "the recorder saw no builtin: is it working?");
    const unneededBuiltins = ["crypto", "zlib", "child_process"].filter((b) => builtins.has(b));
    assert.deepEqual(unneededBuiltins, []);
  });
});

describe("the CLI's code cache", () => {
  let dir: string;
  let installed: string;
  let agent: AgentProcess;
  let folders = 0;

  before(async () => {
    guestlinkArgs([]);
    dir = await mkdtemp(join(tmpdir(), "guestlink-code-cache-"));
    installed = join(dir, "installed");
    await install(installed, []);
    agent = await startAgent(join(dir, "agent.sock"));
  });
  after(async () => {
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  /** A new cache folder, made as bin/guestlink makes one (this user's alone). */
  async function cacheFolder(): Promise<string> {
    const folder = join(dir, `cache-${++folders}`);
    await mkdir(folder, { mode: 0o700 });
    return folder;
  }

  /** Runs guestlink with its cache in `folder`: what it said of the cache, and the cache file. */
  async function withCache(folder: string, args: readonly string[]) {
    const result = await run(installed, args, {
      GUESTLINK_CODE_CACHE: folder,
      NODE_DEBUG: "guestlink",
    });
    const said = result.stderr
      .split("\n")
      .filter((line) => line.startsWith("GUESTLINK "))
      .map((line) => line.replace(/^GUESTLINK \d+: code cache (\S+): /, ""));
    const file = result.stderr.match(/code cache (\S+):/)?.[1] ?? "";
    return { ...result, said, file };
  }

  const exec = () => ["exec", agent.address, "--", "sh", "-c", "echo out; exit 3"];

  /** A new folder whose cache an exec wrote: the file, its bytes, and where its first line ends. */
  async function cacheWritten(): Promise<{
    folder: string;
    file: string;
    data: Buffer;
    end: number;
  }> {
    const folder = await cacheFolder();
    const { file } = await withCache(folder, exec());
    assert.ok(file);
    const data = await readFile(file);
    return { folder, file, data, end: data.indexOf(10) };
  }

  it("is written by a command's first start, used by the next, and again once it reaches an agent", async () => {
    const folder = await cacheFolder();
    // An exec that cannot reach its agent compiles no session (level 0).
    const unreachable = ["exec", `unix:${join(dir, "no-such-folder", "a.sock")}`, "--", "true"];
    const first = await withCache(folder, unreachable);
    assert.equal(first.code, 255);
    assert.deepEqual(first.said, ["none", "written (level 0)"]);
    assert.ok(first.file?.startsWith(folder));
    const written = await stat(first.file);
    assert.equal(written.mode & 0o777, 0o600);

    const second = await withCache(folder, unreachable);
    assert.deepEqual(second.said, ["used (level 0)"]);
    assert.equal((await stat(first.file)).mtimeMs, written.mtimeMs, "it was written again");

    // exec compiles the session as well: its cache replaces the one without it.
    const third = await withCache(folder, exec());
    assert.equal(third.code, 3);
    assert.equal(third.stdout, "out\n");
    assert.deepEqual(third.said, ["used (level 0)", "written (level 1)"]);
    assert.equal(third.file, first.file);
    const fourth = await withCache(folder, exec());
    assert.deepEqual(fourth.said, ["used (level 1)"]);
  });

  it("is each command's own: another command's neither serves exec nor replaces exec's", async () => {
    const folder = await cacheFolder();
    // --help runs the program and no session (--version alone is bin/guestlink's own).
    const help = await withCache(folder, ["--help"]);
    assert.deepEqual(help.said, ["none", "written (level 0)"]);
    const first = await withCache(folder, exec());
    assert.deepEqual(first.said, ["none", "written (level 1)"]);
    assert.notEqual(first.file, help.file);
    assert.match(first.file, /-exec\.cache$/);
    const written = await stat(first.file);
    // A command that compiles other code (ping reaches the agent too) keeps a cache of its own.
    const ping = await withCache(folder, ["ping", "--count", "1", agent.address]);
    assert.equal(ping.code, 0, ping.stderr);
    assert.deepEqual(ping.said, ["none", "written (level 1)"]);
    assert.notEqual(ping.file, first.file);
    const again = await withCache(folder, exec());
    assert.deepEqual(again.said, ["used (level 1)"]);
    assert.equal((await stat(first.file)).mtimeMs, written.mtimeMs, "exec's cache was replaced");
    assert.deepEqual((await withCache(folder, ["--help"])).said, ["used (level 0)"]);
  });

  it("made for another build or Node is not used, and is replaced", async () => {
    const { folder, file, data, end } = await cacheWritten();
    const [magic, format, build, node, platform, level] = data
      .subarray(0, end)
      .toString()
      .split(" ");
    for (const other of [
      [magic, format, "//guestlink-build another", node, platform, level],
      [magic, format, build, "v0.0.0", platform, level],
    ]) {
      await writeFile(file, Buffer.concat([Buffer.from(other.join(" ")), data.subarray(end)]));
      const result = await withCache(folder, exec());
      assert.equal(result.code, 3);
      assert.equal(result.stdout, "out\n");
      assert.deepEqual(result.said, [
        "made for another build, Node or platform",
        "written (level 1)",
      ]);
      const replaced: Buffer = await readFile(file);
      assert.deepEqual(replaced.subarray(0, replaced.indexOf(10)), data.subarray(0, end));
    }
  });

  it("damaged (cut short, or not V8's at all) is refused by V8, and the command runs as ever", async () => {
    const { folder, file, data, end } = await cacheWritten();
    const garbage = Buffer.alloc(data.length - end - 1, 0x5a);
    for (const damaged of [
      data.subarray(0, end + 1 + Math.floor((data.length - end) / 2)),
      Buffer.concat([data.subarray(0, end + 1), garbage]),
    ]) {
      await writeFile(file, damaged);
      const result = await withCache(folder, exec());
      assert.equal(result.code, 3);
      assert.equal(result.stdout, "out\n");
      assert.deepEqual(result.said, ["refused by V8", "written (level 1)"]);
    }
  });

  it("in a folder others may write is neither read nor written", async () => {
    const folder = await cacheFolder();
    const { file } = await withCache(folder, exec());
    assert.ok(file);
    const before = await stat(file);
    await chmod(folder, 0o777);
    const result = await withCache(folder, exec());
    assert.equal(result.code, 3);
    assert.equal(result.stdout, "out\n");
    assert.deepEqual(result.said, ["not this user's alone, not used"]);
    assert.equal((await stat(file)).mtimeMs, before.mtimeMs);
  });

  it("is not used at all with GUESTLINK_CODE_CACHE=off", async () => {
    const result = await withCache("off", ["--help"]);
    assert.equal(result.code, 0);
    assert.deepEqual(result.said, []);
  });
});

describe("which build a command runs from", () => {
  let dir: string;
  before(async () => {
    guestlinkArgs([]); // refuses a build older than src/
    dir = await mkdtemp(join(tmpdir(), "guestlink-entry-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A loader hook that appends the URL of every ES module loaded to `log`, one a line. */
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

  /** The bundle files (by name in dist/bundle/) that `guestlink ARGS…` loaded as ES modules. */
  async function esModules(log: string): Promise<string[]> {
    const text = await readFile(log, "utf8").catch(() => "");
    return text
      .split("\n")
      .filter((url) => url.includes("/dist/bundle/"))
      .map((url) => url.slice(url.indexOf("/dist/bundle/") + "/dist/bundle/".length));
  }

  it("guestlink agent runs from the ES module chunks, which compile only what it runs", async () => {
    const log = join(dir, "agent.log");
    const socket = join(dir, "agent.sock");
    const child = spawn(
      process.execPath,
      ["--import", recorder(log), ...guestlinkArgs(["agent", "--listen", `unix:${socket}`])],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    try {
      let stderr = "";
      child.stderr.setEncoding("utf8");
      await new Promise<void>((resolve, reject) => {
        child.stderr.on("data", (text: string) => {
          stderr += text;
          if (stderr.includes("agent started")) resolve();
        });
        child.once("exit", (code) => reject(new Error(`the agent exited ${code}: ${stderr}`)));
      });
      const loaded = await esModules(log);
      assert.ok(loaded.includes("guestlink.mjs"), loaded.join(", "));
      assert.ok(
        loaded.some((file) => file.startsWith("chunks/")),
        loaded.join(", "),
      );
      // hdr-histogram-js (about 11 MiB of an agent's memory) waits for a fleet run's workload.
      for (const file of loaded) {
        const text = await readFile(join(BUNDLE_DIR, file), "utf8");
        assert.ok(
          !text.includes("node_modules/hdr-histogram-js/"),
          `${file} holds hdr-histogram-js`,
        );
      }
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("every other command runs from the one bundle, with the code cache", async () => {
    const log = join(dir, "help.log");
    const result = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        ["--import", recorder(log), ...guestlinkArgs(["--help"])],
        (err, stdout) => resolve({ code: err === null ? 0 : 1, stdout }),
      );
    });
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^Usage: guestlink/);
    assert.deepEqual(await esModules(log), []);
  });
});
