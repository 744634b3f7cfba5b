/**
 * `guestlink get` and `put` as a user runs them, against the real agent in a process of its own
 * (working folder: a temporary "remote" folder). Every destination is something this test makes
 * in its temporary folders (FIFOs, symlinks, folders, device nodes, the agent's own socket), so
 * that a broken build run against these tests cannot replace a real /dev/null or /dev/stdout.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createReadStream, watch } from "node:fs";
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { CLI_COMMAND, runCli, startCli } from "../helpers/cli.ts";

const temps = async (folder: string) =>
  (await readdir(folder)).filter((name) => name.includes(".guestlink-"));

/** Resolves once `folder` holds an entry `matches` accepts (checked at once, then on changes). */
async function entryAppears(folder: string, matches: (name: string) => boolean): Promise<string> {
  const watcher = watch(folder);
  try {
    for (;;) {
      const found = (await readdir(folder)).find(matches);
      if (found !== undefined) return found;
      await once(watcher, "change");
    }
  } finally {
    watcher.close();
  }
}

/** Resolves once `folder` has no entry `matches` accepts. */
async function entriesGone(folder: string, matches: (name: string) => boolean): Promise<void> {
  const watcher = watch(folder);
  try {
    while ((await readdir(folder)).some(matches)) await once(watcher, "change");
  } finally {
    watcher.close();
  }
}

/** `mkfifo PATH` (Node has no call for it). */
const mkfifo = (path: string) => promisify(execFile)("mkfifo", [path]);
/** A character device node of our own, MAJOR:MINOR, writable by all (root only). */
const mknod = (path: string, major: number, minor: number) =>
  promisify(execFile)("mknod", ["-m", "666", path, "c", String(major), String(minor)]);
const isRoot = process.getuid?.() === 0;

describe("guestlink get and put", () => {
  let dir: string;
  let remote: string;
  let local: string;
  let agent: AgentProcess;
  let addr: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-files-cli-"));
    remote = join(dir, "remote");
    local = join(dir, "local");
    await mkdir(remote);
    await mkdir(local);
    agent = await startAgent(join(dir, "agent.sock"), { cwd: remote });
    addr = agent.address;
    await writeFile(join(remote, "hello.txt"), "hello from the agent\n");
    await writeFile(join(local, "note.txt"), "a note from the host\n");
  });
  after(async () => {
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  it("get writes through to a FIFO here and put to a FIFO in the agent, which stay FIFOs", async () => {
    const here = join(local, "pipe");
    await mkfifo(here);
    const reading = readFile(here, "utf8");
    const got = await runCli(["get", addr, join(remote, "hello.txt"), here]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await reading, "hello from the agent\n");
    assert.ok((await lstat(here)).isFIFO());

    const there = join(remote, "pipe");
    await mkfifo(there);
    // The agent waits for a reader; the reader comes after the put has started.
    const put = runCli(["put", addr, join(local, "note.txt"), there]);
    const chunks: Buffer[] = [];
    for await (const chunk of createReadStream(there)) chunks.push(chunk as Buffer);
    const done = await put;
    assert.equal(done.code, 0, done.stderr);
    assert.equal(Buffer.concat(chunks).toString(), "a note from the host\n");
    assert.ok((await lstat(there)).isFIFO());
    assert.deepEqual(await temps(local), []);
    assert.deepEqual(await temps(remote), []);
  });

  it("writes through to a null device and reports a full one as NO_SPACE, leaving both devices", {
    skip: !isRoot && "making device nodes (mknod) needs root",
  }, async () => {
    // Nodes of our own (the kernel's null and full devices): a broken build replacing them
    // harms nothing outside this test's folder, as replacing /dev/null would.
    for (const folder of [local, remote]) {
      await mknod(join(folder, "null"), 1, 3);
      await mknod(join(folder, "full"), 1, 7);
    }
    for (const args of [
      ["get", addr, join(remote, "hello.txt"), join(local, "null")],
      ["put", addr, join(local, "note.txt"), join(remote, "null")],
    ]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
    }
    const got = await runCli(["get", addr, join(remote, "hello.txt"), join(local, "full")]);
    assert.equal(got.code, 255);
    assert.match(got.stderr, /^guestlink: on this host: \/.*\/full .*no space.* \[NO_SPACE\]\n$/);
    const put = await runCli(["put", addr, join(local, "note.txt"), join(remote, "full")]);
    assert.equal(put.code, 255);
    assert.match(put.stderr, /^guestlink: in the agent [^:]+: \/.*\/full .* \[NO_SPACE\]\n$/);
    for (const folder of [local, remote]) {
      for (const device of ["null", "full"]) {
        assert.ok((await lstat(join(folder, device))).isCharacterDevice(), device);
      }
      assert.deepEqual(await temps(folder), []);
    }
  });

  it("get to a link to /proc/self/fd/1 (what /dev/stdout is) prints the file and leaves the link", async () => {
    const stdoutLink = join(local, "stdout");
    await symlink("/proc/self/fd/1", stdoutLink);
    const cli = CLI_COMMAND.map((a) => `'${a}'`).join(" ");
    const run = promisify(execFile);
    const shell = `${cli} get "$1" "$2" "$3" | cat`;
    const { stdout } = await run("sh", [
      "-c",
      shell,
      "sh",
      addr,
      join(remote, "hello.txt"),
      stdoutLink,
    ]);
    assert.equal(stdout, "hello from the agent\n");
    assert.equal(await readlink(stdoutLink), "/proc/self/fd/1");

    // stdout redirected to a file: written as a redirect is, not renamed over the file (which
    // would lose what the shell writes to it next), and no report in it.
    const redirected = join(local, "redirected.txt");
    const script = `{ echo before; ${cli} get "$1" "$2" "$3"; echo after; } > "$4"`;
    await run("sh", ["-c", script, "sh", addr, join(remote, "hello.txt"), stdoutLink, redirected]);
    assert.equal(await readFile(redirected, "utf8"), "before\nhello from the agent\nafter\n");
  });

  it("put refuses the agent's own open files (its /dev/stdout)", async () => {
    const link = join(remote, "agent-stdout");
    await symlink("/proc/self/fd/1", link);
    const r = await runCli(["put", addr, join(local, "note.txt"), link]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /in the agent [^:]+: .* own open files \(fd 1\).*\[UNSUPPORTED_FILE_TYPE\]\n$/,
    );
    assert.equal(await readlink(link), "/proc/self/fd/1");
  });

  it("refuses a socket as the destination on both sides, leaving it", async () => {
    const socket = join(dir, "agent.sock");
    const got = await runCli(["get", addr, join(remote, "hello.txt"), socket]);
    assert.equal(got.code, 255);
    assert.match(got.stderr, /on this host: .* is a socket.* \[UNSUPPORTED_FILE_TYPE\]/);
    const put = await runCli(["put", addr, join(local, "note.txt"), socket]);
    assert.equal(put.code, 255);
    assert.match(put.stderr, /in the agent [^:]+: .* is a socket.* \[UNSUPPORTED_FILE_TYPE\]/);
    assert.ok((await lstat(socket)).isSocket());
  });

  it("follows a symlink on both sides, replacing the file it points to; --no-follow replaces the link", async () => {
    for (const [direction, source, folder] of [
      ["get", join(remote, "hello.txt"), local],
      ["put", join(local, "note.txt"), remote],
    ] as const) {
      await mkdir(join(folder, "targets"));
      const target = join(folder, "targets", "real.txt");
      await writeFile(target, "old");
      const link = join(folder, `link-${direction}`);
      await symlink(join("targets", "real.txt"), link);
      const r = await runCli([direction, addr, source, link]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readlink(link), join("targets", "real.txt"));
      assert.equal(await readFile(target, "utf8"), await readFile(source, "utf8"));
      assert.match(r.stdout, new RegExp(`-> (${addr}:)?${target} `));

      const r2 = await runCli([direction, addr, source, link, "--no-follow"]);
      assert.equal(r2.code, 0, r2.stderr);
      assert.ok((await lstat(link)).isFile(), "the link itself was replaced");
      assert.equal(await readFile(target, "utf8"), await readFile(source, "utf8"));
      assert.deepEqual(await temps(folder), []);
      assert.deepEqual(await temps(join(folder, "targets")), []);
    }
  });

  it("- is stdout for get and stdin for put, and no file named - appears", async () => {
    const got = await runCli(["get", addr, "hello.txt", "-"], { cwd: local });
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, "hello from the agent\n");
    assert.equal(got.stderr, "");
    const put = await runCli(["put", addr, "-", "from-stdin.txt"], {
      cwd: local,
      stdin: "typed in\n",
    });
    assert.equal(put.code, 0, put.stderr);
    assert.equal(await readFile(join(remote, "from-stdin.txt"), "utf8"), "typed in\n");
    assert.ok(!(await readdir(local)).includes("-"));
    assert.ok(!(await readdir(remote)).includes("-"));
  });

  it("copies into an existing folder under the source's name, on both sides", async () => {
    await mkdir(join(local, "inbox"));
    await mkdir(join(remote, "inbox"));
    const got = await runCli(["get", addr, join(remote, "hello.txt"), join(local, "inbox")]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(
      await readFile(join(local, "inbox", "hello.txt"), "utf8"),
      "hello from the agent\n",
    );
    const put = await runCli(["put", addr, join(local, "note.txt"), "inbox/"]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(
      await readFile(join(remote, "inbox", "note.txt"), "utf8"),
      "a note from the host\n",
    );
  });

  it("takes remote relative paths from the agent's working folder", async () => {
    const put = await runCli(["put", addr, join(local, "note.txt"), "rel.txt"]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(await readFile(join(remote, "rel.txt"), "utf8"), "a note from the host\n");
    assert.match(put.stdout, new RegExp(`:${join(remote, "rel.txt")} `));
    const got = await runCli(["get", addr, "./rel.txt", join(local, "rel-back.txt")]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await readFile(join(local, "rel-back.txt"), "utf8"), "a note from the host\n");
  });

  it("says on which side a file is missing or a folder", async () => {
    const get = await runCli(["get", addr, "missing.txt", join(local, "x")]);
    assert.equal(get.code, 255);
    assert.equal(
      get.stderr,
      `guestlink: in the agent ${get.stderr.match(/in the agent ([^:]+):/)?.[1]}: ${join(remote, "missing.txt")} does not exist [FILE_NOT_FOUND]\n`,
    );
    const put = await runCli(["put", addr, join(local, "missing.txt"), "x"]);
    assert.equal(put.code, 255);
    assert.equal(
      put.stderr,
      `guestlink: on this host: ${join(local, "missing.txt")} does not exist [FILE_NOT_FOUND]\n`,
    );
    const folder = await runCli(["get", addr, remote, join(local, "y")]);
    assert.equal(folder.code, 255);
    assert.match(folder.stderr, /in the agent .* is a folder.*add -r .*\[IS_A_DIRECTORY\]\n$/);
    assert.ok(!(await readdir(local)).includes("x"));
    assert.ok(!(await readdir(remote)).includes("x"));
  });

  it("copies folders with -r both ways, reporting what is neither file nor folder", async () => {
    const tree = join(local, "tree");
    await mkdir(join(tree, "a", "b"), { recursive: true });
    await writeFile(join(tree, "one"), "1");
    await writeFile(join(tree, "a", "b", "three"), "3");
    await symlink("one", join(tree, "link"));
    const put = await runCli(["put", "-r", addr, tree, "copies"]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(
      put.stderr,
      `guestlink: skipped ${join(tree, "link")}: a symlink, not a file or folder\n`,
    );
    assert.match(put.stdout, /2 files in 3 folders, .* 1 skipped/);
    assert.equal(await readFile(join(remote, "copies", "a", "b", "three"), "utf8"), "3");
    // Into an existing folder, under the source's name.
    const again = await runCli(["put", "-r", addr, tree, "copies", "--json"]);
    assert.equal(JSON.parse(again.stdout).path, join(remote, "copies", "tree"));

    const got = await runCli(["get", "-r", addr, "copies", join(local, "back")]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await readFile(join(local, "back", "one"), "utf8"), "1");
    assert.equal(await readFile(join(local, "back", "tree", "a", "b", "three"), "utf8"), "3");
    assert.deepEqual((await readdir(join(local, "back"))).sort(), ["a", "one", "tree"]);
  });

  it("Ctrl-C during a get exits 130 with one line and leaves no temporary file, even with the agent stuck", async () => {
    await writeFile(join(remote, "big.img"), "");
    await truncate(join(remote, "big.img"), 4 * 1024 ** 3);
    const into = join(local, "cancel-get");
    await mkdir(into);
    await writeFile(join(into, "big.img"), "the old file");
    const cli = startCli(["get", addr, join(remote, "big.img"), join(into, "big.img")]);
    let stderr = "";
    cli.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const exited = once(cli, "exit");
    await entryAppears(into, (name) => name.includes(".guestlink-"));
    process.kill(agent.pid, "SIGSTOP");
    try {
      cli.kill("SIGINT");
      const [code] = await exited;
      assert.equal(code, 130);
      assert.match(
        stderr,
        /^guestlink: interrupted \(Ctrl-C\); .*big\.img was left as it was and the partial copy was removed \[CANCELLED\]\n$/,
      );
      assert.deepEqual(await readdir(into), ["big.img"]);
      assert.equal(await readFile(join(into, "big.img"), "utf8"), "the old file");
    } finally {
      process.kill(agent.pid, "SIGCONT");
    }
  });

  it("Ctrl-C during a put exits 130 and the agent removes its temporary file", async () => {
    const into = join(remote, "cancel-put");
    await mkdir(into);
    const cli = startCli(["put", addr, "-", join(into, "upload.bin")]);
    let stderr = "";
    cli.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const exited = once(cli, "exit");
    cli.stdin.write(Buffer.alloc(64 * 1024, 1));
    await entryAppears(into, (name) => name.includes(".guestlink-"));
    cli.kill("SIGINT");
    const [code] = await exited;
    assert.equal(code, 130);
    assert.match(stderr, /^guestlink: interrupted \(Ctrl-C\); .* \[CANCELLED\]\n$/);
    await entriesGone(into, (name) => name.includes(".guestlink-"));
    assert.deepEqual(await readdir(into), []);
    assert.ok((await stat(into)).isDirectory());
  });
});
