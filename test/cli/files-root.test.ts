/**
 * `guestlink agent --files-root DIR` (docs/security.md), through the CLI against real agent
 * processes: get and put (and -r) inside DIR work, and nothing leads out of it — no `..`, no
 * absolute path elsewhere, no symlink out at the end of a path or on the way — each refused with
 * PATH_OUTSIDE_ROOT in one line, nothing outside read or written. And the agent logs every exec
 * and file operation with the peer's identity and address (the key's id over keyed tcp:).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { FilesRoot } from "../../src/agent/files-root.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { runCli } from "../helpers/cli.ts";
import { until } from "../helpers/until.ts";

let dir: string;
let root: string;
let outside: string;
let agent: AgentProcess;
let addr: string;

/** The agent's log lines as objects. */
function logLines(a: AgentProcess): Record<string, unknown>[] {
  return a
    .log()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const OUTSIDE =
  /^guestlink: in the agent [^:]+: .* is outside .*--files-root.*\[PATH_OUTSIDE_ROOT\]\n$/;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-root-"));
  root = join(dir, "root");
  outside = join(dir, "outside");
  await mkdir(join(root, "sub"), { recursive: true });
  await mkdir(outside);
  await writeFile(join(root, "inside.txt"), "inside\n");
  await writeFile(join(root, "sub", "deep.txt"), "deep\n");
  await writeFile(join(outside, "secret.txt"), "secret\n");
  await symlink("inside.txt", join(root, "link-in")); // inside, to inside: fine
  await symlink(join(outside, "secret.txt"), join(root, "link-out")); // to a file outside
  await symlink(outside, join(root, "folder-out")); // a folder outside, on the way
  await symlink(join(outside, "nothing-yet"), join(root, "dangling-out")); // to nothing, outside
  agent = await startAgent(join(dir, "agent.sock"), {
    args: ["--files-root", root],
    keepLogChars: 4 * 1024 * 1024,
  });
  addr = agent.address;
});

after(async () => {
  await agent?.kill();
  await rm(dir, { recursive: true, force: true });
});

describe("agent --files-root", () => {
  it("gets files inside, by a relative path, an absolute one, and a symlink that stays inside", async () => {
    for (const path of ["inside.txt", join(root, "inside.txt"), "link-in", "./inside.txt"]) {
      const r = await runCli(["get", addr, path, "-"]);
      assert.equal(r.code, 0, `${path}: ${r.stderr}`);
      assert.equal(r.stdout, "inside\n", path);
    }
    const deep = await runCli(["get", addr, "sub/deep.txt", "-"]);
    assert.equal(deep.stdout, "deep\n", deep.stderr);
  });

  it("refuses to read anything outside: .., an absolute path, a symlink out at the end or on the way", async () => {
    for (const path of [
      "../outside/secret.txt",
      "sub/../../outside/secret.txt",
      join(outside, "secret.txt"),
      "/etc/passwd",
      "link-out",
      "folder-out/secret.txt",
      "dangling-out",
    ]) {
      const r = await runCli(["get", addr, path, "-"]);
      assert.equal(r.code, 255, path);
      assert.equal(r.stdout, "", `${path}: nothing of the file was sent`);
      assert.match(r.stderr, OUTSIDE, path);
    }
  });

  it("puts files inside, and refuses to write outside; nothing outside is created or changed", async () => {
    const source = join(dir, "source.txt");
    await writeFile(source, "new content\n");
    const ok = await runCli(["put", addr, source, "sub/put.txt"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(await readFile(join(root, "sub", "put.txt"), "utf8"), "new content\n");
    for (const path of [
      "../outside/new.txt",
      join(outside, "new.txt"),
      "link-out", // followed: it would replace the secret
      "folder-out/new.txt",
      "dangling-out", // followed: it would create outside/nothing-yet
    ]) {
      const r = await runCli(["put", addr, source, path]);
      assert.equal(r.code, 255, path);
      assert.match(r.stderr, OUTSIDE, path);
    }
    assert.deepEqual((await readdir(outside)).sort(), ["secret.txt"]);
    assert.equal(await readFile(join(outside, "secret.txt"), "utf8"), "secret\n");
    // No temporary file left behind inside either.
    assert.deepEqual(
      (await readdir(join(root, "sub"))).filter((n) => n.includes(".guestlink-")),
      [],
    );
  });

  it("copies folders inside with -r both ways, and refuses a folder outside", async () => {
    const local = join(dir, "local-copy");
    const got = await runCli(["get", "-r", addr, "sub", local]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await readFile(join(local, "deep.txt"), "utf8"), "deep\n");
    const put = await runCli(["put", "-r", addr, local, "copied"]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(await readFile(join(root, "copied", "deep.txt"), "utf8"), "deep\n");
    const list = await runCli(["get", "-r", addr, "folder-out", join(dir, "nope")]);
    assert.equal(list.code, 255);
    assert.match(list.stderr, OUTSIDE);
    const mkdirOut = await runCli(["put", "-r", addr, local, "folder-out/made"]);
    assert.equal(mkdirOut.code, 255);
    assert.match(mkdirOut.stderr, OUTSIDE);
    assert.deepEqual((await readdir(outside)).sort(), ["secret.txt"]);
  });

  it("logs every exec and file operation with the peer's id, host and address; refusals as warnings", async () => {
    const r = await runCli(["exec", addr, "--", "echo", "logged"]);
    assert.equal(r.code, 0, r.stderr);
    await until("the exec's lines in the agent's log", () =>
      logLines(agent).some((l) => l.msg === "exec done") ? true : undefined,
    );
    const lines = logLines(agent);
    const execStart = lines.find((l) => l.msg === "exec" && l.argv === "echo logged");
    assert.ok(execStart, agent.log());
    // The CLI's peer id is its host name and pid.
    assert.match(execStart.peer as string, /^.+:\d+$/);
    assert.equal(execStart.address, addr);
    assert.equal(typeof execStart.host, "string");
    const execEnd = lines.find((l) => l.msg === "exec done" && l.peer === execStart.peer);
    assert.equal(execEnd?.status, 0);
    assert.equal(typeof execEnd?.ms, "number");
    // Every file operation above: its path, who asked, how it went.
    const gets = lines.filter((l) => l.msg === "files.get");
    assert.ok(gets.some((l) => l.path === "inside.txt" && l.address === addr));
    const refused = lines.filter((l) => l.code === "PATH_OUTSIDE_ROOT");
    assert.ok(refused.length >= 10, `refusals logged: ${refused.length}`);
    for (const l of refused) {
      assert.equal(l.level, 40, "a refusal is a warning");
      assert.match(l.msg as string, /^files\.[a-z]+ failed$/);
      assert.equal(typeof l.peer, "string");
      assert.equal(l.address, addr);
    }
    assert.ok(
      lines.some((l) => l.msg === "files.put done" && l.path === join(root, "sub", "put.txt")),
    );
    assert.ok(lines.some((l) => l.msg === "files.mkdir"));
    assert.ok(lines.some((l) => l.msg === "files.list"));
    // Nothing of it on stdout: the agent's stdout is the protocol in --stdio mode.
  });

  it("over keyed tcp:, logs the peer's address and the id of the key it proved it holds", async () => {
    const keyFile = join(dir, "key");
    assert.equal((await runCli(["keygen", keyFile])).code, 0);
    const keyed = await startAgent(join(dir, "keyed.sock"), {
      args: ["--listen", "tcp:127.0.0.1:0", "--key-file", keyFile, "--files-root", root],
    });
    try {
      const listening = logLines(keyed).find((l) => l.msg === "listening" && l.keyId);
      assert.ok(listening, keyed.log());
      const tcp = listening.address as string;
      const r = await runCli(["get", "--key-file", keyFile, tcp, "inside.txt", "-"]);
      assert.equal(r.code, 0, r.stderr);
      await until("the get's line", () =>
        logLines(keyed).find((l) => l.msg === "files.get done") ? true : undefined,
      );
      const get = logLines(keyed).find((l) => l.msg === "files.get");
      assert.ok(get);
      assert.match(get.address as string, /^tcp:127\.0\.0\.1:\d+$/);
      assert.notEqual(get.address, tcp, "the peer's address, not the one listened on");
      assert.equal(get.keyId, listening.keyId);
      assert.match(get.keyId as string, /^[0-9a-f]{16}$/);
    } finally {
      await keyed.kill();
    }
  });

  it("refuses to start on a folder that does not exist", async () => {
    const r = await runCli([
      "agent",
      "--listen",
      `unix:${join(dir, "x.sock")}`,
      "--files-root",
      join(dir, "missing"),
    ]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /--files-root .*missing: no such folder \[INVALID_OPTION\]/);
  });
});

describe("FilesRoot", () => {
  it("checks what was opened by the path the kernel has for it: a file swapped in from outside is refused", async () => {
    const confined = await FilesRoot.open(root);
    const inside = await open(join(root, "inside.txt"), "r");
    await confined.checkOpened(inside, "inside.txt");
    await inside.close();
    // As if a folder on the way had been swapped for a symlink between the check and the open.
    const swapped = await open(join(outside, "secret.txt"), "r");
    await assert.rejects(confined.checkOpened(swapped, "sub/secret.txt"), (err: unknown) =>
      isGuestlinkError(err, "PATH_OUTSIDE_ROOT"),
    );
  });

  it("refuses .. as written, whatever it would resolve to", async () => {
    const confined = await FilesRoot.open(root);
    assert.throws(
      () => confined.locate("sub/../inside.txt"),
      (err: unknown) => isGuestlinkError(err, "PATH_OUTSIDE_ROOT"),
    );
    assert.equal(confined.locate("sub/deep.txt"), join(confined.real, "sub", "deep.txt"));
  });
});
