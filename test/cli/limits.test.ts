/**
 * The agent's limits as a user sets them (docs/security.md#limits): past `--max-connections` a
 * new session is refused at once with LIMIT_EXCEEDED in one line (and logged), the one open
 * goes on, and there is room again once it ends; a limit that is not a whole number is refused.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { until } from "../helpers/until.ts";

let dir: string;
let agent: AgentProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-limits-"));
  agent = await startAgent(join(dir, "agent.sock"), { args: ["--max-connections", "1"] });
});

after(async () => {
  await agent?.kill();
  await rm(dir, { recursive: true, force: true });
});

describe("agent limits from the command line", () => {
  it("--max-connections 1: a second session is refused with LIMIT_EXCEEDED while the first runs", async () => {
    const first = startCli(["exec", agent.address, "--", "sh", "-c", "echo started; sleep 2"]);
    let out = "";
    first.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    await until("the first session's command", () => (out.includes("started") ? true : undefined));
    const second = await runCli(["ping", "-c", "1", agent.address]);
    assert.equal(second.code, 255);
    assert.match(
      second.stderr,
      /^guestlink: .*1 sessions are open here already.*\[LIMIT_EXCEEDED\]\n$/,
    );
    await until("the agent's log of it", () =>
      /"limit":"maxSessions".*refused a session/.test(agent.log()) ? true : undefined,
    );
    const [code] = await once(first, "close");
    assert.equal(code, 0, "the first went on");
    await until("room again", async () =>
      (await runCli(["ping", "-c", "1", agent.address])).code === 0 ? true : undefined,
    );
  });

  it("a keyed listener holds at most --max-pending silent connections, each for --hello-timeout, and a keyed client still gets in", async () => {
    const keyFile = join(dir, "key");
    assert.equal((await runCli(["keygen", keyFile])).code, 0);
    const keyed = await startAgent(join(dir, "keyed.sock"), {
      args: [
        "--listen",
        "tcp:127.0.0.1:0",
        "--key-file",
        keyFile,
        "--max-pending",
        "5",
        "--hello-timeout",
        "3",
      ],
    });
    const silent: Socket[] = [];
    try {
      const m = /"addresses":\[[^\]]*"(tcp:[^"]+)"/.exec(keyed.log());
      assert.ok(m, keyed.log());
      const address = m[1] as string;
      const [host, port] = [address.split(":")[1] as string, Number(address.split(":")[2])];
      let closed = 0;
      for (let i = 0; i < 20; i++) {
        const s = createConnection({ host, port });
        s.on("error", () => {});
        s.once("close", () => closed++);
        await once(s, "connect");
        silent.push(s);
      }
      // Dropped as the new ones came, long before their 3 s were up.
      await until("all but the newest 5 dropped", () => (closed >= 15 ? true : undefined), 2_500);
      const r = await runCli(["ping", "-c", "1", "--key-file", keyFile, address]);
      assert.equal(r.code, 0, r.stderr);
      // Those left never finish the TLS handshake: dropped once --hello-timeout is up.
      await until("the rest dropped after 3 s", () => (closed === 20 ? true : undefined), 15_000);
    } finally {
      for (const s of silent) s.destroy();
      await keyed.kill();
    }
  });

  it("refuses a limit that is not a whole number of 1 or more", async () => {
    for (const [flag, value] of [
      ["--max-streams", "0"],
      ["--max-connections", "many"],
      ["--max-pending", "1.5"],
    ]) {
      const r = await runCli([
        "agent",
        "--listen",
        `unix:${join(dir, "x.sock")}`,
        flag as string,
        value as string,
      ]);
      assert.equal(r.code, 255, `${flag} ${value}`);
      assert.match(r.stderr, new RegExp(`${flag} takes a whole number.*\\[INVALID_OPTION\\]`));
    }
  });
});
