/**
 * The exec service end to end: the agent's handler served over a real Unix socket, driven by the
 * controller's remoteExec. The agent's own result is captured where the handler returns, which is
 * also the moment its process group must be gone.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { PassThrough, Readable, Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { type ExecResult, execService } from "../../src/agent/exec.ts";
import { pipeSlabs } from "../../src/agent/pipe-reads.ts";
import { resetSpawnAddon, SPAWN_ADDON_ENV, spawnAddon } from "../../src/agent/spawn-native.ts";
import { ExecControl, type ExecRequest, remoteExec } from "../../src/controller/exec.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { toDuplex } from "../../src/platform/duplex.ts";
import {
  openSession,
  type SessionServer,
  serveSessions,
  sessionOptions,
} from "../../src/platform/session.ts";
import { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { slabsAllocated } from "../../src/transport/slab-reads.ts";
import { hashSink, randomOutput } from "../helpers/output-check.ts";

const MiB = 1024 * 1024;

/** A Writable that keeps what it is given and can be awaited for content. */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  #waiters: { test: (text: string) => boolean; resolve: () => void }[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.#waiters.length > 0) {
      const text = this.text();
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.test(text)) return true;
        w.resolve();
        return false;
      });
    }
    callback();
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.buffer().toString("utf8");
  }

  /** Resolves once what arrived so far passes `test`. */
  until(test: (text: string) => boolean): Promise<void> {
    if (test(this.text())) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Throws unless no process is left in the group. */
function assertGroupGone(pgid: number): void {
  assert.throws(
    () => process.kill(-pgid, 0),
    (e: NodeJS.ErrnoException) => e.code === "ESRCH",
    `process group ${pgid} still has members`,
  );
}

/**
 * Whether the spawn addon loads here. It must where CI builds it (GUESTLINK_TOOLS_REQUIRED=1 on
 * Linux); elsewhere the native suite skips with the reason.
 */
function nativeSkip(): false | string {
  const loaded = spawnAddon();
  if ("addon" in loaded) return false;
  if (process.env.GUESTLINK_TOOLS_REQUIRED === "1" && process.platform === "linux") {
    throw new Error(`${loaded.reason}, and GUESTLINK_TOOLS_REQUIRED=1 says it must load here`);
  }
  return loaded.reason;
}

/** Runs `fn` with GUESTLINK_SPAWN_ADDON set to `value` (undefined: unset) and the addon looked up again. */
function useSpawner(value: string | undefined): () => void {
  const before = process.env[SPAWN_ADDON_ENV];
  if (value === undefined) delete process.env[SPAWN_ADDON_ENV];
  else process.env[SPAWN_ADDON_ENV] = value;
  resetSpawnAddon();
  return () => {
    if (before === undefined) delete process.env[SPAWN_ADDON_ENV];
    else process.env[SPAWN_ADDON_ENV] = before;
    resetSpawnAddon();
  };
}

// Every case runs with both spawners: they must give the same results (agent/spawner.ts).
for (const spawner of ["native", "node"] as const) {
  describe(`exec over a Unix socket (${spawner === "native" ? "posix_spawn, the addon" : "child_process, the addon off"})`, {
    skip: spawner === "native" ? nativeSkip() : false,
  }, () => {
    let dir: string;
    let server: SessionServer;
    let session: Session;
    let restoreSpawner = () => {};
    /** What the agent's handler returned, call by call. */
    const handled: Promise<unknown>[] = [];
    const lastAgentResult = () => handled.at(-1) as Promise<ExecResult>;

    before(async () => {
      restoreSpawner = useSpawner(spawner === "native" ? undefined : "off");
      dir = await mkdtemp(join(tmpdir(), "guestlink-exec-"));
      const exec = execService();
      server = await serveSessions(`unix:${join(dir, "agent.sock")}`, (s) => {
        for (const [method, handler] of Object.entries(exec.methods)) {
          s.handle(method, (params, ctx) => {
            const outcome = Promise.resolve().then(() => handler(params, ctx));
            handled.push(outcome);
            return outcome;
          });
        }
      });
      session = await openSession(server.address);
    });

    after(async () => {
      await session?.close();
      await server?.close();
      await rm(dir, { recursive: true, force: true });
      restoreSpawner();
    });

    async function run(
      request: ExecRequest,
      io: { stdin?: NodeJS.ReadableStream; control?: ExecControl } = {},
      options: { signal?: AbortSignal; deadline?: number } = {},
    ) {
      const stdout = new Collector();
      const stderr = new Collector();
      const result = await remoteExec(
        session,
        request,
        { stdin: io.stdin, stdout, stderr, control: io.control },
        options,
      );
      return { result, stdout, stderr };
    }

    it("starts the command in a session of its own, no signal blocked or ignored, with pipes or socket pairs", async () => {
      const ids = await run({
        argv: ["sh", "-c", "echo $$ $(ps -o pgid= -p $$) $(ps -o sid= -p $$)"],
      });
      const [pid, pgid, sid] = ids.stdout.text().trim().split(/\s+/);
      assert.equal(pgid, pid, "it leads its process group");
      assert.equal(sid, pid, "and its session");
      // The command itself (a shell blocks signals of its own around fork and wait).
      const signals = await run({ argv: ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"] });
      assert.match(
        signals.stdout.text(),
        /^SigBlk:\s+0+\nSigIgn:\s+0+\n$/,
        "SIGPIPE (Node ignores it) is at its default",
      );
      const fds = await run({
        argv: ["readlink", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"],
      });
      const kind = spawner === "native" ? /^pipe:/ : /^socket:/;
      for (const fd of fds.stdout.text().trim().split("\n")) assert.match(fd, kind);
    });

    it("gives /dev/null for a stream the caller did not open", async () => {
      const call = session.open(
        "exec",
        { argv: ["sh", "-c", "readlink /proc/$$/fd/0 /proc/$$/fd/2"] },
        { streams: ["stdout"] },
      );
      const stdout = toDuplex(call.streams.stdout as SessionStream);
      const chunks: Buffer[] = [];
      for await (const chunk of stdout) chunks.push(chunk as Buffer);
      const result = (await call.result) as ExecResult;
      assert.equal(result.status, 0);
      assert.equal(Buffer.concat(chunks).toString(), "/dev/null\n/dev/null\n");
    });

    it("looks the command up in the PATH of its own environment", async () => {
      const bin = join(dir, "bin");
      await mkdir(bin, { recursive: true });
      await writeFile(join(bin, "guestlink-test-only-here"), "#!/bin/sh\necho found\n", {
        mode: 0o755,
      });
      const { result, stdout } = await run({
        argv: ["guestlink-test-only-here"],
        env: { PATH: `${bin}:${process.env.PATH}` },
      });
      assert.equal(result.status, 0);
      assert.equal(stdout.text(), "found\n");
      const missing = await run({ argv: ["guestlink-test-only-here"] });
      assert.equal(missing.result.status, 127);
    });

    it("delivers signals sent on the control stream to the process group", async () => {
      const control = new ExecControl();
      const stdout = new Collector();
      const call = remoteExec(
        session,
        {
          argv: [
            "sh",
            "-c",
            'trap "echo got USR1" USR1; trap "echo got INT; exit 9" INT; echo ready; while :; do sleep 0.05; done',
          ],
        },
        { stdout, stderr: new Collector(), control },
      );
      await stdout.until((text) => text.includes("ready\n"));
      control.signal("SIGUSR1");
      await stdout.until((text) => text.includes("got USR1\n"));
      control.signal("SIGINT");
      const result = await call;
      assert.equal(result.status, 9);
      assert.equal(stdout.text(), "ready\ngot USR1\ngot INT\n");
    });

    it("reads a command's output into a few buffers, used again once the host has the bytes", {
      skip: spawner === "node" ? "child_process reads into buffers of its own" : false,
    }, async () => {
      const file = join(dir, "random-48.bin");
      const before = pipeSlabs.allocated;
      const { result, stdout, stderr } = await run({
        argv: randomOutput(48 * MiB, file),
      });
      assert.equal(result.status, 0);
      assert.equal(stdout.bytes, 48 * MiB);
      // Byte-exact: no buffer was read into again while the session still needed its bytes.
      assert.equal(sha256(stdout.buffer()), stderr.text().split(" ")[0]);
      // 48 MiB went through slabs of 1 MiB; new ones only while the host had not acknowledged.
      const allocated = pipeSlabs.allocated - before;
      assert.ok(allocated <= 24, `${allocated} slabs of 1 MiB for 48 MiB`);
    });

    it("with recycle, the host reads the output into a few buffers, used again once written out", async () => {
      const file = join(dir, "random-48-host.bin");
      const before = slabsAllocated();
      const stdout = hashSink();
      const stderr = new Collector();
      const result = await remoteExec(
        session,
        { argv: randomOutput(48 * MiB, file) },
        { stdout, stderr, recycle: true },
      );
      assert.equal(result.status, 0);
      const { sha256: got, bytes } = stdout.digest();
      assert.equal(bytes, 48 * MiB);
      assert.equal(got, stderr.text().split(" ")[0], "byte-exact");
      const allocated = slabsAllocated() - before;
      assert.ok(allocated <= 24, `${allocated} slabs of 1 MiB read into for 48 MiB`);
    });

    it("delivers 5 MiB of random bytes exactly as the command wrote them", async () => {
      const file = join(dir, "random.bin");
      const { result, stdout, stderr } = await run({
        argv: randomOutput(5 * MiB, file),
      });
      assert.equal(result.status, 0);
      assert.equal(stdout.bytes, 5 * MiB);
      assert.equal(result.stdoutBytes, 5 * MiB);
      // The command's own hash of the bytes it wrote, against the hash of what arrived.
      assert.equal(sha256(stdout.buffer()), stderr.text().split(" ")[0]);
      assert.equal(result.stderrBytes, stderr.bytes);
      assert.equal(result.truncated, false);
    });

    it("keeps stdout and stderr apart", async () => {
      const { result, stdout, stderr } = await run({
        argv: ["sh", "-c", "printf 'to out, '; printf 'to err' >&2; printf 'out again'"],
      });
      assert.equal(stdout.text(), "to out, out again");
      assert.equal(stderr.text(), "to err");
      assert.equal(result.stdoutBytes, 17);
      assert.equal(result.stderrBytes, 6);
    });

    it("reports exit codes as the status", async () => {
      const ok = await run({ argv: ["true"] });
      assert.equal(ok.result.status, 0);
      assert.equal(ok.result.reason, "exited");
      assert.equal(ok.result.exitCode, 0);
      const three = await run({ argv: ["sh", "-c", "exit 3"] });
      assert.equal(three.result.status, 3);
      assert.equal(three.result.exitCode, 3);
      assert.equal(three.result.signal, null);
    });

    it("reports death by signal N as status 128+N", async () => {
      const { result } = await run({ argv: ["sh", "-c", "kill -9 $$"] });
      assert.equal(result.status, 137);
      assert.equal(result.signal, "SIGKILL");
      assert.equal(result.exitCode, null);
      assert.equal(result.reason, "signaled");
    });

    it("returns 127 with the OS's reason for a command that does not exist", async () => {
      const { result } = await run({ argv: ["guestlink-test-no-such-command", "arg"] });
      assert.equal(result.status, 127);
      assert.equal(result.reason, "not-found");
      assert.match(result.message ?? "", /guestlink-test-no-such-command: .*\(ENOENT\)/);
    });

    it("returns 126 with the OS's reason for a file that is not executable", async () => {
      const file = join(dir, "not-executable.sh");
      await writeFile(file, "#!/bin/sh\necho never\n");
      await chmod(file, 0o644);
      const { result, stdout } = await run({ argv: [file] });
      assert.equal(result.status, 126);
      assert.equal(result.reason, "not-executable");
      assert.match(result.message ?? "", /\(EACCES\)/);
      assert.equal(stdout.bytes, 0);
    });

    it("runs an executable text file without #! with /bin/sh, as execvp does", async () => {
      const file = join(dir, "no-shebang");
      await writeFile(file, 'echo "no #! line: $1"\n', { mode: 0o755 });
      const { result, stdout } = await run({ argv: [file, "arg"] });
      assert.equal(result.status, 0, JSON.stringify(result));
      assert.equal(stdout.text(), "no #! line: arg\n");
    });

    it("returns 125 when the working folder does not exist, rather than blaming the command", async () => {
      const { result } = await run({ argv: ["true"], cwd: join(dir, "no-such-folder") });
      assert.equal(result.status, 125);
      assert.equal(result.reason, "start-failed");
      assert.match(result.message ?? "", /no-such-folder: .*\(ENOENT\)/);
    });

    it("streams stdin to the command and ends it when the input ends", async () => {
      const input = Buffer.alloc(3 * MiB);
      for (let i = 0; i < input.length; i++) input[i] = (i * 7) % 256;
      const cat = await run({ argv: ["cat"] }, { stdin: Readable.from([input]) });
      assert.equal(cat.result.status, 0);
      assert.equal(sha256(cat.stdout.buffer()), sha256(input));
      const wc = await run({ argv: ["wc", "-c"] }, { stdin: Readable.from([input]) });
      assert.equal(wc.stdout.text().trim(), String(3 * MiB));
      const none = await run({ argv: ["wc", "-c"] });
      assert.equal(none.stdout.text().trim(), "0");
    });

    it("ends the call when the command exits without reading all of an endless stdin", async () => {
      const block = Buffer.alloc(64 * 1024, 0x61);
      const endless = new Readable({
        read() {
          this.push(block);
        },
      });
      const { result, stdout } = await run({ argv: ["head", "-c", "10"] }, { stdin: endless });
      assert.equal(result.status, 0);
      assert.equal(stdout.text(), "aaaaaaaaaa");
      endless.destroy();
    });

    it("runs a command line with /bin/sh -c when asked", async () => {
      const { result, stdout } = await run({
        argv: ["echo", "$((6 * 7))", "|", "tr", "4", "x"],
        shell: true,
      });
      assert.equal(result.status, 0);
      assert.equal(stdout.text(), "x2\n");
    });

    it("sets env over the agent's own environment, and the working folder", async () => {
      const { result, stdout } = await run({
        argv: ["sh", "-c", 'printf "%s|%s|%s" "$GUESTLINK_TEST" "$HOME" "$(pwd -P)"'],
        env: { GUESTLINK_TEST: "from the host" },
        cwd: dir,
      });
      assert.equal(result.status, 0);
      assert.equal(stdout.text(), `from the host|${process.env.HOME}|${await realpath(dir)}`);
    });

    it("gives the agent's environment as it is now, changes since it started included", async () => {
      process.env.GUESTLINK_TEST_SET_NOW = "set while the agent runs";
      const home = process.env.HOME;
      delete process.env.HOME;
      try {
        const { result, stdout } = await run({
          argv: ["sh", "-c", 'printf "%s|%s" "$GUESTLINK_TEST_SET_NOW" "$(env | grep -c ^HOME=)"'],
        });
        assert.equal(result.status, 0);
        assert.equal(stdout.text(), "set while the agent runs|0", "HOME was removed");
      } finally {
        delete process.env.GUESTLINK_TEST_SET_NOW;
        if (home !== undefined) process.env.HOME = home;
      }
    });

    it("stops at exactly maxOutputBytes, says so, and exits 141", async () => {
      const { result, stdout } = await run({ argv: ["yes"], maxOutputBytes: MiB });
      assert.equal(stdout.bytes, MiB);
      assert.equal(stdout.text(), "y\n".repeat(MiB / 2));
      assert.equal(result.stdoutBytes, MiB);
      assert.equal(result.truncated, true);
      assert.equal(result.status, 141);
      assert.equal(result.reason, "output-limit");
    });

    it("counts stdout and stderr together against maxOutputBytes", async () => {
      const { result, stdout, stderr } = await run({
        argv: ["sh", "-c", "yes err >&2 & exec yes out"],
        maxOutputBytes: 256 * 1024,
      });
      assert.equal(stdout.bytes + stderr.bytes, 256 * 1024);
      assert.equal(result.stdoutBytes + result.stderrBytes, 256 * 1024);
      assert.equal(result.truncated, true);
      assert.equal(result.status, 141);
    });

    it("does not truncate output that exactly fills maxOutputBytes", async () => {
      const { result, stdout } = await run({
        argv: ["head", "-c", "1000", "/dev/zero"],
        maxOutputBytes: 1000,
      });
      assert.equal(stdout.bytes, 1000);
      assert.equal(result.truncated, false);
      assert.equal(result.status, 0);
    });

    it("treats a local output that fails like a closed pipe: the command sees its output closed", async () => {
      let writes = 0;
      const failing = new Writable({
        write(_chunk, _encoding, callback) {
          if (++writes === 3) callback(Object.assign(new Error("write EPIPE"), { code: "EPIPE" }));
          else callback();
        },
      });
      const failed = once(failing, "error");
      const stderr = new Collector();
      const result = await remoteExec(session, { argv: ["yes"] }, { stdout: failing, stderr });
      assert.equal((await failed)[0].code, "EPIPE");
      if (spawner === "native") {
        // A real pipe: the command dies of SIGPIPE, as in a shell.
        assert.equal(result.reason, "signaled", JSON.stringify(result));
        assert.equal(result.signal, "SIGPIPE");
        assert.equal(result.status, 141);
      } else {
        // A socketpair: closed with bytes unread, the writer gets ECONNRESET (yes reports it and
        // exits 1); closed empty, EPIPE and SIGPIPE (141). Either way it stops.
        assert.ok(
          (result.reason === "exited" && result.status === 1 && /yes: /.test(stderr.text())) ||
            (result.reason === "signaled" && result.signal === "SIGPIPE"),
          JSON.stringify(result),
        );
      }
      assert.equal(result.truncated, false);
    });

    it("kills the whole process group at the deadline (status 124) and leaves nothing behind", async () => {
      const pidFile = join(dir, "deadline.pid");
      const { result } = await run(
        { argv: ["sh", "-c", 'echo $$ > "$1"; sleep 300 & sleep 300 & wait', "sh", pidFile] },
        {},
        { deadline: performance.now() + 1_500 },
      );
      assert.equal(result.reason, "timeout", "the caller hears from the agent how it ended");
      assert.equal(result.status, 124);
      const agentResult = await lastAgentResult();
      assert.equal(agentResult.reason, "timeout");
      assertGroupGone(Number(await readFile(pidFile, "utf8")));
    });

    it("kills the whole process group when cancelled (status 130) and leaves nothing behind", async () => {
      const controller = new AbortController();
      const stdout = new Collector();
      const call = remoteExec(
        session,
        { argv: ["sh", "-c", "echo $$; sleep 300 & sleep 300 & wait"] },
        { stdout, stderr: new Collector() },
        { signal: controller.signal },
      );
      await stdout.until((text) => text.endsWith("\n"));
      const pgid = Number(stdout.text());
      controller.abort();
      const result = await call;
      assert.equal(
        result.reason,
        "cancelled",
        "the agent confirmed the cancel with the real status",
      );
      assert.equal(result.status, 130);
      const agentResult = await lastAgentResult();
      assert.equal(agentResult.reason, "cancelled");
      assertGroupGone(pgid);
    });

    it("uses SIGKILL after the grace period on a command that ignores SIGTERM", async () => {
      const controller = new AbortController();
      const stdout = new Collector();
      const call = remoteExec(
        session,
        {
          argv: ["sh", "-c", "trap '' TERM; echo $$; while :; do sleep 1; done"],
          killGraceMs: 100,
        },
        { stdout, stderr: new Collector() },
        { signal: controller.signal },
      );
      await stdout.until((text) => text.endsWith("\n"));
      const pgid = Number(stdout.text());
      controller.abort();
      const result = await call;
      assert.equal(result.signal, "SIGKILL");
      const agentResult = await lastAgentResult();
      assert.equal(agentResult.signal, "SIGKILL");
      assert.equal(agentResult.status, 130);
      assertGroupGone(pgid);
    });

    it("refuses bad requests with INVALID_OPTION, in the agent and before sending", async () => {
      for (const params of [
        { argv: [] },
        { argv: "ls" },
        {},
        { argv: ["ls"], maxOutputBytes: -1 },
        { argv: ["ls"], env: { A: 1 } },
        { argv: ["ls"], arv: ["typo"] },
        { argv: ["ls\0"] },
        "ls",
      ]) {
        await assert.rejects(
          session.call("exec", params),
          (e: unknown) =>
            isGuestlinkError(e, "INVALID_OPTION") && /exec: invalid request/.test(e.message),
          JSON.stringify(params),
        );
      }
      await assert.rejects(
        run({ argv: [] }),
        (e: unknown) =>
          isGuestlinkError(e, "INVALID_OPTION") && /argv must name a command/.test(e.message),
      );
      assert.throws(
        () => execService({ killGraceMs: -5 }),
        (e: unknown) => isGuestlinkError(e, "INVALID_OPTION"),
      );
    });

    it("runs the command on a terminal with -t, or refuses with TTY_UNSUPPORTED without the addon", async () => {
      const request = {
        argv: ["sh", "-c", "tty; stty size; printf 'err\\n' >&2; exit 4"],
        tty: { rows: 33, cols: 101 },
      };
      if (spawner === "node") {
        await assert.rejects(
          run(request),
          (e: unknown) =>
            isGuestlinkError(e, "TTY_UNSUPPORTED") && /turned off/.test((e as Error).message),
        );
        return;
      }
      const { result, stdout, stderr } = await run(request);
      assert.equal(result.status, 4, "the status is as without a terminal");
      assert.match(stdout.text(), /^\/dev\/pts\/\d+\r\n33 101\r\nerr\r\n$/);
      assert.equal(stderr.bytes, 0, "stderr comes through the terminal");
      assert.equal(result.stdoutBytes, stdout.bytes);
    });

    it("resizes the terminal, and passes Ctrl-C as a byte that the terminal makes SIGINT", {
      skip: spawner === "node" && "a terminal needs the addon",
    }, async () => {
      const control = new ExecControl();
      const stdin = new PassThrough();
      const stdout = new Collector();
      const call = remoteExec(
        session,
        {
          argv: ["sh", "-c", "stty size; read line; stty size; exec cat"],
          tty: { rows: 24, cols: 80 },
        },
        { stdin, stdout, stderr: new Collector(), control },
      );
      await stdout.until((text) => text.includes("24 80\r\n"));
      control.resize(50, 132);
      stdin.write("go\r");
      await stdout.until((text) => text.includes("50 132\r\n"));
      stdin.write("typed\r");
      await stdout.until((text) => /typed\r\n.*typed\r\n/s.test(text));
      stdin.write("\x03");
      const result = await call;
      assert.equal(result.reason, "signaled", JSON.stringify(result));
      assert.equal(result.signal, "SIGINT");
      assert.equal(result.status, 130);
    });

    it("leaves no stream open afterwards: the session closes cleanly", async () => {
      await session.close();
      assert.equal(await session.closed, undefined);
    });
  });
}

describe("exec in the same process as its host, over a memory pair", { skip: nativeSkip() }, () => {
  it("a host that keeps every chunk keeps them intact: bytes shared in memory are never read into again", async () => {
    const exec = execService();
    const [a, b] = memoryPair();
    const host = new Session(a, sessionOptions("client", { resume: false }));
    const agent = new Session(b, sessionOptions("server", { resume: false }));
    for (const [method, handler] of Object.entries(exec.methods)) agent.handle(method, handler);
    const dir = await mkdtemp(join(tmpdir(), "guestlink-exec-memory-"));
    try {
      const stdout = new Collector();
      const stderr = new Collector();
      const file = join(dir, "random.bin");
      const result = await remoteExec(
        host,
        { argv: randomOutput(32 * MiB, file) },
        { stdout, stderr },
      );
      assert.equal(result.status, 0);
      assert.equal(stdout.bytes, 32 * MiB);
      // The chunks kept all along, hashed only now: none was overwritten by a later read.
      assert.equal(sha256(stdout.buffer()), stderr.text().split(" ")[0]);
    } finally {
      await host.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("exec with a slow reader", () => {
  let dir: string;
  let agent: ChildProcess;
  let session: Session;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-exec-big-"));
    const socket = join(dir, "agent.sock");
    const fixture = new URL("../fixtures/exec-agent.ts", import.meta.url).pathname;
    agent = spawn(process.execPath, ["--import", "tsx", fixture, socket], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const stdout = agent.stdout as Readable;
    let seen = "";
    for await (const chunk of stdout) {
      seen += String(chunk);
      if (seen.includes("ready\n")) break;
    }
    session = await openSession(`unix:${socket}`);
  });

  after(async () => {
    await session?.close();
    if (agent && agent.exitCode === null) {
      const exited = once(agent, "exit");
      agent.stdin?.end();
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("passes 2 GiB to a slow reader with the agent's memory bounded", async () => {
    const before = (await session.call("rss")) as { maxRSS: number };
    const total = 2 * 1024 * MiB;
    let received = 0;
    let chunks = 0;
    let nonZero = 0;
    const zeros = Buffer.alloc(1024 * 1024);
    // Slower than the command: every 8th chunk waits a millisecond.
    const slow = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        if (!chunk.equals(zeros.subarray(0, chunk.length))) nonZero++;
        if (++chunks % 8 === 0) setTimeout(callback, 1);
        else callback();
      },
    });
    const result = await remoteExec(
      session,
      { argv: ["head", "-c", String(total), "/dev/zero"] },
      { stdout: slow, stderr: slow },
      { deadline: Infinity },
    );
    assert.equal(result.status, 0);
    assert.equal(result.stdoutBytes, total);
    assert.equal(received, total);
    assert.equal(nonZero, 0);
    const after = (await session.call("rss")) as { maxRSS: number; replayPeakBytes: number };
    // What the session holds is bounded by the peer's window (4 MiB), not by the 2 GiB sent.
    const keptMiB = after.replayPeakBytes / MiB;
    assert.ok(keptMiB <= 5, `the agent kept ${keptMiB.toFixed(1)} MiB for replay`);
    // The process as a whole: V8 frees the 64 KiB buffers read from the pipe only at its own
    // pace (growth of 30-70 MiB is usual, more on a loaded machine); a stream that piled bytes
    // up would pass 128 MiB long before 2 GiB.
    const growthMiB = (after.maxRSS - before.maxRSS) / 1024;
    assert.ok(growthMiB < 128, `agent peak RSS grew by ${growthMiB.toFixed(1)} MiB`);
  });
});
