/**
 * The spawn addon's parts that exec's own tests (exec.test.ts, run with both spawners) do not
 * reach: reaping without pidfds (SIGCHLD, Linux before 5.3), a terminal whose program does not
 * read its input (writes wait without blocking the event loop), start failures shaped as
 * child_process's, and where the addon is looked for.
 */
import assert from "node:assert/strict";
import { closeSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  SPAWN_ADDON_FILE,
  spawnAddon,
  startNative,
  TerminalStream,
  waitBySigchld,
} from "../../src/agent/spawn-native.ts";
import { addonCandidates, moduleDir } from "../../src/platform/native-addon.ts";

const loaded = spawnAddon();
const skip =
  "addon" in loaded
    ? false
    : process.env.GUESTLINK_TOOLS_REQUIRED === "1" && process.platform === "linux"
      ? assert.fail(`${loaded.reason}, and GUESTLINK_TOOLS_REQUIRED=1 says it must load here`)
      : loaded.reason;

describe("the spawn addon", { skip }, () => {
  const addon = "addon" in loaded ? loaded.addon : (undefined as never);
  const env = Object.entries(process.env).map(([k, v]) => `${k}=${v}`);

  it("reaps through SIGCHLD where there are no pidfds", async () => {
    const spawnOne = (script: string) => {
      const { pid, pidfd, fds } = addon.spawn(
        "sh",
        ["sh", "-c", script],
        env,
        null,
        [0, 0, 0],
        null,
      );
      if (pidfd >= 0) closeSync(pidfd);
      for (const fd of fds) if (fd >= 0) closeSync(fd);
      return pid;
    };
    const [seven, killed, slow] = await Promise.all([
      waitBySigchld(addon, spawnOne("exit 7")),
      waitBySigchld(addon, spawnOne("kill -TERM $$")),
      waitBySigchld(addon, spawnOne("sleep 0.3; exit 2")),
    ]);
    assert.deepEqual(seven, { code: 7, signal: null });
    assert.deepEqual(killed, { code: null, signal: "SIGTERM" });
    assert.deepEqual(slow, { code: 2, signal: null });
    assert.equal(process.listenerCount("SIGCHLD"), 0, "the listener goes once nothing waits");
  });

  it("fails to start as child_process does: ENOENT, EACCES with spawn FILE", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guestlink-spawn-"));
    const plain = join(dir, "not-executable");
    await writeFile(plain, "echo never\n", { mode: 0o644 });
    for (const [file, code] of [
      ["guestlink-test-no-such-command", "ENOENT"],
      [plain, "EACCES"],
      [dir, "EACCES"],
    ] as const) {
      const starting = startNative(addon, {
        file,
        args: [],
        env: process.env,
        stdio: [true, true, true],
      });
      assert.equal(starting.pid, undefined);
      const started = await starting.started;
      assert.ok("error" in started);
      const error = started.error as NodeJS.ErrnoException;
      assert.equal(error.code, code, file);
      assert.equal(error.syscall, `spawn ${file}`);
      assert.equal(typeof error.errno, "number");
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps the event loop running while a terminal's program does not read what is typed", async () => {
    const starting = startNative(addon, {
      file: "sh",
      // Raw: a canonical terminal drops what does not fit a line rather than making writes wait.
      args: ["-c", "stty raw -echo; echo ready; exec sleep 5"],
      env: process.env,
      stdio: [true, true, true],
      tty: { rows: 24, cols: 80 },
    });
    const child = await starting.started;
    assert.ok(!("error" in child));
    const terminal = child.stdout as TerminalStream;
    assert.ok(terminal instanceof TerminalStream);
    terminal.on("error", () => {});
    let shown = "";
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer) => {
        shown += chunk.toString();
        if (!shown.includes("ready")) return;
        terminal.off("data", onData);
        terminal.pause();
        resolve();
      };
      terminal.on("data", onData);
    });
    let written = false;
    // Far more than the terminal's input queue holds (64 KiB of buffers and the 4 KiB line).
    terminal.write(Buffer.alloc(1024 * 1024, 0x61), () => {
      written = true;
    });
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(performance.now() - started < 1_000, "timers still fire");
    assert.equal(written, false, "the write waits for the program");
    process.kill(-child.pid, "SIGKILL");
    assert.deepEqual(await child.exited, { code: null, signal: "SIGKILL" });
    terminal.destroy();
  });

  it("is looked for beside the module, the bundle and in native/build/Release above them", () => {
    const candidates = addonCandidates(SPAWN_ADDON_FILE, undefined);
    assert.equal(candidates[0], join(moduleDir(), SPAWN_ADDON_FILE));
    assert.ok(
      candidates.includes(
        join(moduleDir(), "..", "..", "native", "build", "Release", SPAWN_ADDON_FILE),
      ),
      candidates.join(", "),
    );
    assert.deepEqual(addonCandidates(SPAWN_ADDON_FILE, "/x/y.node"), ["/x/y.node"]);
  });
});
