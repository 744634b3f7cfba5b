/**
 * `guestlink serve`'s dial-in `listen:` entries with `key_file:` and `max_agents:` (docs/daemon.md,
 * docs/security.md), with real processes: an agent that dials in with the key is held and
 * reached through `@ID`; one with another key or none is refused (AUTH_FAILED) and logged; past
 * `max_agents` a new id is refused with LIMIT_EXCEEDED while those held keep working; and the
 * config refuses a network address without a key, and a key on anything but tcp:.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { guestlinkArgs } from "../helpers/bin.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { freePort } from "../helpers/ports.ts";
import { until } from "../helpers/until.ts";

describe("guestlink serve: keyed dial-in listen: entries and max_agents", () => {
  let dir = "";
  let socket = "";
  let keyFile = "";
  let otherKey = "";
  let address = "";
  let serve: ReturnType<typeof startCli> | undefined;
  let serveErr = "";
  const diallers: { child: ChildProcess; log: () => string }[] = [];
  const env = () => ({ GUESTLINK_SOCKET: socket });

  /** `guestlink agent --connect ADDRESS --id ID ARGS…`, its log kept. */
  const dialIn = (id: string, args: string[]) => {
    const child = spawn(
      process.execPath,
      guestlinkArgs(["agent", "--connect", address, "--id", id, ...args]),
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      log += d;
    });
    const d = { child, log: () => log };
    diallers.push(d);
    return d;
  };
  const ls = async () => {
    const r = await runCli(["ls", "--json"], { env: env() });
    return new Map(
      (JSON.parse(r.stdout).agents as { id: string; state: string }[]).map((a) => [a.id, a.state]),
    );
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-dial-in-"));
    socket = join(dir, "serve.sock");
    keyFile = join(dir, "agents.key");
    otherKey = join(dir, "other.key");
    for (const f of [keyFile, otherKey]) assert.equal((await runCli(["keygen", f])).code, 0);
    address = `tcp:127.0.0.1:${await freePort()}`;
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen:\n  - { address: "${address}", key_file: ${keyFile}, max_agents: 2 }\nsocket: ${socket}\nhttp: off\n`,
    );
    serve = startCli(["serve", "--config", config]);
    serve.stderr.setEncoding("utf8").on("data", (d: string) => {
      serveErr += d;
    });
    await until("the daemon", () => (serveErr.includes("daemon running") ? true : undefined));
    assert.match(
      serveErr,
      /agents may dial in at tcp:127\.0\.0\.1:\d+ \(TLS 1\.3, pre-shared key\)/,
    );
  });

  after(async () => {
    for (const d of diallers) d.child.kill("SIGKILL");
    if (serve !== undefined && serve.exitCode === null) {
      serve.kill("SIGKILL");
      await once(serve, "close");
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("holds an agent that dials in with the key, reached through @ID", async () => {
    dialIn("edge-1", ["--key-file", keyFile]);
    await until("edge-1 up", async () => ((await ls()).get("edge-1") === "up" ? true : undefined));
    const r = await runCli(["exec", "@edge-1", "--", "echo", "keyed"], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "keyed\n");
  });

  it("refuses an agent with another key, and one with none (AUTH_FAILED), and logs who tried", async () => {
    const wrong = dialIn("edge-wrong", ["--key-file", otherKey]);
    const none = dialIn("edge-none", []);
    await until("both told AUTH_FAILED", () =>
      /AUTH_FAILED/.test(wrong.log()) && /AUTH_FAILED/.test(none.log()) ? true : undefined,
    );
    await until("the daemon's log of both", () =>
      (serveErr.match(/refused tcp:127\.0\.0\.1:\d+ at tcp:/g) ?? []).length >= 2
        ? true
        : undefined,
    );
    const held = await ls();
    assert.equal(held.has("edge-wrong"), false);
    assert.equal(held.has("edge-none"), false);
    wrong.child.kill("SIGKILL");
    none.child.kill("SIGKILL");
  });

  it("past max_agents refuses a new id with LIMIT_EXCEEDED; those held keep working", async () => {
    dialIn("edge-2", ["--key-file", keyFile]);
    await until("edge-2 up", async () => ((await ls()).get("edge-2") === "up" ? true : undefined));
    const third = dialIn("edge-3", ["--key-file", keyFile]);
    await until("edge-3 told LIMIT_EXCEEDED", () =>
      /LIMIT_EXCEEDED/.test(third.log()) ? true : undefined,
    );
    assert.match(third.log(), /max_agents/);
    assert.match(serveErr, /as edge-3, but 2 agents are held from there \(max_agents\); refused/);
    assert.equal((await ls()).has("edge-3"), false);
    const r = await runCli(["exec", "@edge-1", "--", "echo", "still"], { env: env() });
    assert.equal(r.stdout, "still\n", r.stderr);
  });

  it("refuses a network address without a key, and a key on a unix: address (exit 5)", async () => {
    const wide = await runCli([
      "serve",
      "--listen",
      "tcp:0.0.0.0:7071",
      "--socket",
      join(dir, "x.sock"),
      "--http",
      "off",
    ]);
    assert.equal(wide.code, 5, wide.stderr);
    assert.match(
      wide.stderr,
      /tcp:0\.0\.0\.0:7071 is not a loopback address.*key_file.*\[CONFIG_INVALID\]/,
    );
    const config = join(dir, "bad.yaml");
    writeFileSync(config, `listen:\n  - { address: "unix:${dir}/a.sock", key_file: ${keyFile} }\n`);
    const unix = await runCli(["serve", "--config", config, "--socket", join(dir, "y.sock")]);
    assert.equal(unix.code, 5, unix.stderr);
    assert.match(unix.stderr, /listen\[0\]\.key_file: a key applies to tcp: addresses only/);
  });
});
