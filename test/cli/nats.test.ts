/**
 * nats: addresses with real nats-servers on loopback (test/helpers/nats-server.ts): the agent
 * connects out to a server and the CLI reaches it by id, through one server, through a cluster of
 * three (agent and client on different servers), across a server killed and restarted in the
 * middle of a command, with a reader too slow for the output, and with every bad input.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, residentBytes, startAgentAt } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { type NatsServer, startNatsServers } from "../helpers/nats-server.ts";
import { freePort } from "../helpers/ports.ts";
import { requires } from "../helpers/requires.ts";
import { until } from "../helpers/until.ts";

const skip = requires("nats-server");
const MiB = 1024 * 1024;

type Servers = NatsServer[] & { stop(): Promise<void> };

/** `guestlink ARGS…` with its stdout as bytes. */
async function runBytes(
  args: readonly string[],
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const child = startCli(args);
  child.stdin.end();
  const chunks: Buffer[] = [];
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => chunks.push(d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, stdout: Buffer.concat(chunks), stderr };
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let dir: string;
let data: Buffer;
let dataFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-nats-test-"));
  // Random bytes, so a chunk out of place or lost shows.
  data = randomBytes(3 * MiB + 12_345);
  dataFile = join(dir, "data.bin");
  await writeFile(dataFile, data);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("nats: one server", { skip }, () => {
  let servers: Servers;
  let agent: AgentProcess;
  let address: string;

  before(async () => {
    // An odd max_payload, smaller than a session frame: every frame spans messages.
    servers = await startNatsServers(1, { maxPayload: 100_003 });
    address = `${(servers[0] as NatsServer).url}/io-1`;
    agent = await startAgentAt(address);
  });

  after(async () => {
    await agent?.kill();
    await servers?.stop();
  });

  it("exec's output arrives byte-exact, with its exit code", async () => {
    const r = await runBytes(["exec", address, "--", "sh", "-c", `cat ${dataFile}; exit 3`]);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 3);
    assert.equal(r.stdout.length, data.length);
    assert.equal(sha256(r.stdout), sha256(data));
  });

  it("put and get move a file unchanged", async () => {
    const there = join(dir, "put.bin");
    const put = await runCli(["put", address, dataFile, there]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(sha256(await readFile(there)), sha256(data));
    const back = join(dir, "got.bin");
    const got = await runCli(["get", address, there, back]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(sha256(await readFile(back)), sha256(data));
  });

  it("info names the agent by its NATS id", async () => {
    const r = await runCli(["info", address]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^agent\s+io-1 \(guestlink /m);
  });

  it("a second agent with the same id is refused: ADDRESS_IN_USE, one line", async () => {
    const r = await runCli(["agent", "--listen", address]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^guestlink: an agent with id "io-1" is already on the NATS servers at nats:\/\/127\.0\.0\.1:\d+: .*\[ADDRESS_IN_USE\]\n$/,
    );
  });

  it("an unknown agent id fails in one line with CONNECT_FAILED, naming the id", async () => {
    const url = (servers[0] as NatsServer).url;
    const r = await runCli(["exec", "--connect-timeout", "1", `${url}/nobody`, "--", "true"]);
    assert.equal(r.code, 255);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /^guestlink: .*no agent "nobody" is on the NATS servers at .*\[CONNECT_FAILED\]\n$/,
    );
  });

  it("the reader's pace bounds what is in flight: both sides' memory stays bounded", async () => {
    const total = 256 * MiB;
    const child = startCli(["exec", address, "--", "head", "-c", String(total), "/dev/zero"]);
    child.stdin.end();
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    // Read one byte, then nothing for a while: the pipe fills and the CLI stops taking output.
    const first = await new Promise<Buffer>((resolve) =>
      child.stdout.once("readable", () => resolve(child.stdout.read(1) as Buffer)),
    );
    assert.equal(first.length, 1);
    let peakAgent = 0;
    let peakClient = 0;
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 100));
      peakAgent = Math.max(peakAgent, residentBytes(agent.pid, "VmHWM"));
      peakClient = Math.max(peakClient, residentBytes(child.pid as number, "VmHWM"));
    }
    let received = 1;
    child.stdout.on("data", (d: Buffer) => {
      received += d.length;
    });
    const code = await closed;
    assert.equal(code, 0, stderr);
    assert.equal(received, total);
    // Unbounded, one side or the other would hold most of the 256 MiB.
    assert.ok(peakAgent < 160 * MiB, `the agent peaked at ${peakAgent / MiB} MiB`);
    assert.ok(peakClient < 160 * MiB, `the client peaked at ${peakClient / MiB} MiB`);
  });
});

describe("nats: bad inputs (no server needed)", () => {
  it("an address without an agent id, or with one NATS cannot carry, is INVALID_ADDRESS", async () => {
    for (const [address, why] of [
      ["nats://127.0.0.1:4222", /needs the agent's id/],
      ["nats://127.0.0.1:4222/a.b", /not usable on NATS/],
      ["nats:127.0.0.1:4222/a", /are URLs/],
      ["nats://127.0.0.1:99999/a", /port/],
    ] as const) {
      const r = await runCli(["exec", address, "--", "true"]);
      assert.equal(r.code, 255, address);
      assert.match(r.stderr, why, address);
      assert.match(r.stderr, /^guestlink: .*\[INVALID_ADDRESS\]\n$/, address);
    }
  });

  it("no server at the address: CONNECT_FAILED once --connect-timeout is over, one line", async () => {
    const port = await freePort();
    const r = await runCli([
      "exec",
      "--connect-timeout",
      "1",
      `nats://127.0.0.1:${port}/io-1`,
      "--",
      "true",
    ]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^guestlink: .*cannot reach the NATS server at nats:\/\/127\.0\.0\.1:\d+ .*\[CONNECT_FAILED\]\n$/,
    );
  });

  it("--nats-creds with a file that is not there fails at once, naming the file", async () => {
    const r = await runCli([
      "exec",
      "--nats-creds",
      join(dir, "missing.creds"),
      "nats://127.0.0.1:4222/io-1",
      "--",
      "true",
    ]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^guestlink: cannot read the NATS credentials file .*missing\.creds.*\n$/,
    );
  });

  it("--nats-creds with another kind of address is refused", async () => {
    const r = await runCli(["exec", "--nats-creds", "x.creds", "unix:/nope", "--", "true"]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /--nats-creds applies to nats: addresses only.*\[INVALID_OPTION\]\n$/);
  });
});

describe("nats: credentials", { skip }, () => {
  it("a token in the URL logs in; a wrong one is AUTH_FAILED at once", async () => {
    const servers = await startNatsServers(1, { token: "s3cret" });
    const url = (servers[0] as NatsServer).url.replace("nats://", "nats://s3cret@");
    const agent = await startAgentAt(`${url}/io-t`);
    try {
      const ok = await runCli(["exec", `${url}/io-t`, "--", "echo", "in"]);
      assert.equal(ok.stdout, "in\n", ok.stderr);
      const started = performance.now();
      const bad = await runCli([
        "exec",
        `${url.replace("s3cret", "wrong")}/io-t`,
        "--",
        "echo",
        "in",
      ]);
      assert.equal(bad.code, 255);
      assert.match(
        bad.stderr,
        /^guestlink: the NATS server at nats:\/\/127\.0\.0\.1:\d+ refused our credentials .*\[AUTH_FAILED\]\n$/,
      );
      // Not retried for --connect-timeout (30 s): credentials do not heal by waiting.
      assert.ok(performance.now() - started < 20_000);
      // The password is never printed.
      assert.doesNotMatch(bad.stderr, /wrong/);
    } finally {
      await agent.kill();
      await servers.stop();
    }
  });

  it("a user and password in the URL log in; a wrong password is AUTH_FAILED", async () => {
    const servers = await startNatsServers(1, { user: { name: "ops", password: "p@ss:word" } });
    const base = (servers[0] as NatsServer).url;
    const url = base.replace("nats://", `nats://ops:${encodeURIComponent("p@ss:word")}@`);
    const agent = await startAgentAt(`${url}/io-u`);
    try {
      const ok = await runCli(["exec", `${url}/io-u`, "--", "echo", "in"]);
      assert.equal(ok.stdout, "in\n", ok.stderr);
      const bad = await runCli([
        "exec",
        `${base.replace("nats://", "nats://ops:nope@")}/io-u`,
        "--",
        "true",
      ]);
      assert.equal(bad.code, 255);
      assert.match(bad.stderr, /refused our credentials.*\[AUTH_FAILED\]\n$/);
    } finally {
      await agent.kill();
      await servers.stop();
    }
  });
});

describe("nats: a creds file (decentralised auth: operator, account, user)", { skip }, () => {
  it("--nats-creds logs the agent and the client in; an untrusted user's creds are AUTH_FAILED", async () => {
    const servers = await startNatsServers(1, { operator: true });
    const address = `${(servers[0] as NatsServer).url}/io-k`;
    const agent = await startAgentAt(address, { args: ["--nats-creds", servers.creds.trusted] });
    try {
      const ok = await runCli([
        "exec",
        "--nats-creds",
        servers.creds.trusted,
        address,
        "--",
        "echo",
        "in",
      ]);
      assert.equal(ok.stdout, "in\n", ok.stderr);
      // The same file named in the address.
      const inUrl = await runCli([
        "exec",
        `${address}?creds=${servers.creds.trusted}`,
        "--",
        "echo",
        "in",
      ]);
      assert.equal(inUrl.stdout, "in\n", inUrl.stderr);
      const none = await runCli(["exec", address, "--", "true"]);
      assert.equal(none.code, 255);
      assert.match(none.stderr, /refused our credentials.*\[AUTH_FAILED\]\n$/);
      const bad = await runCli([
        "exec",
        "--nats-creds",
        servers.creds.untrusted,
        address,
        "--",
        "true",
      ]);
      assert.equal(bad.code, 255);
      assert.match(
        bad.stderr,
        /^guestlink: the NATS server at .* refused our credentials .*\[AUTH_FAILED\]\n$/,
      );
    } finally {
      await agent.kill();
      await servers.stop();
    }
  });
});

describe("nats: a cluster of three", { skip }, () => {
  let servers: Servers;
  let agent: AgentProcess;

  before(async () => {
    servers = await startNatsServers(3);
    agent = await startAgentAt(`${(servers[0] as NatsServer).url}/io-c`);
  });

  after(async () => {
    await agent?.kill();
    await servers?.stop();
  });

  it("a client on another server of the cluster reaches the agent, byte-exact", async () => {
    const r = await runBytes([
      "exec",
      `${(servers[2] as NatsServer).url}/io-c`,
      "--",
      "cat",
      dataFile,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.stdout), sha256(data));
  });

  it("the agent's server is killed mid-exec: the agent moves to another, the output is exact", async () => {
    const lines = 60;
    const script = `i=0; while [ $i -lt ${lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; done`;
    const child = startCli([
      "exec",
      `${(servers[1] as NatsServer).url},127.0.0.1:${(servers[2] as NatsServer).port}/io-c`,
      "--",
      "sh",
      "-c",
      script,
    ]);
    child.stdin.end();
    let out = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    await until("the first lines", () => (out.includes("line 3\n") ? true : undefined));
    await (servers[0] as NatsServer).kill();
    const code = await closed;
    assert.equal(code, 0, stderr);
    assert.equal(out, Array.from({ length: lines }, (_, i) => `line ${i}\n`).join(""));
    await (servers[0] as NatsServer).restart();
  });
});

describe("nats: a message out of sequence", { skip }, () => {
  it("breaks the connection, and the session resumes over a new one; the output is exact", async () => {
    const servers = await startNatsServers(1);
    const server = servers[0] as NatsServer;
    const agent = await startAgentAt(`${server.url}/io-s`);
    const { connect } = await import("@nats-io/transport-node");
    // A third party on the server: it sees which connection the exec uses, and forges a message
    // on it with a sequence number far ahead (as if NATS had dropped messages before it).
    const nc = await connect({ servers: `127.0.0.1:${server.port}` });
    try {
      let forged = false;
      nc.subscribe("guestlink.conn.*.down", {
        callback: (err, msg) => {
          if (err !== null || forged) return;
          forged = true;
          const bogus = new Uint8Array(5 + 3);
          bogus[0] = 0;
          new DataView(bogus.buffer).setUint32(1, 1_000_000);
          bogus.set([1, 2, 3], 5);
          nc.publish(msg.subject, bogus);
        },
      });
      await nc.flush();
      const lines = 40;
      const script = `i=0; while [ $i -lt ${lines} ]; do echo line $i; i=$((i+1)); sleep 0.02; done`;
      const r = await runCli(["exec", `${server.url}/io-s`, "--", "sh", "-c", script]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, Array.from({ length: lines }, (_, i) => `line ${i}\n`).join(""));
      assert.ok(forged);
      await until("the agent's log of the resume", () =>
        /session resumed/.test(agent.log()) ? true : undefined,
      );
    } finally {
      await nc.close();
      await agent.kill();
      await servers.stop();
    }
  });
});

describe("nats: the server restarts mid-exec", { skip }, () => {
  it("the session resumes once the server is back; the output is byte-exact", async () => {
    const servers = await startNatsServers(1);
    const server = servers[0] as NatsServer;
    const agent = await startAgentAt(`${server.url}/io-r`);
    try {
      const lines = 80;
      const script = `i=0; while [ $i -lt ${lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; done`;
      const child = startCli(["exec", `${server.url}/io-r`, "--", "sh", "-c", script]);
      child.stdin.end();
      let out = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
      });
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
      await until("the first lines", () => (out.includes("line 3\n") ? true : undefined));
      await server.restart();
      const code = await closed;
      assert.equal(code, 0, stderr);
      assert.equal(out, Array.from({ length: lines }, (_, i) => `line ${i}\n`).join(""));
      await until("the agent's log of the resume", () =>
        /session resumed/.test(agent.log()) ? true : undefined,
      );
    } finally {
      await agent.kill();
      await servers.stop();
    }
  });
});
