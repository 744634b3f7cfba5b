/**
 * docs/guides/nats.md, run as written: the four configuration files of "On one machine" are
 * saved as they stand and started with nats-server (on the guide's own ports, 4222-4224), and the
 * guide's commands run against them: two agents with the agent user, `ls` and `exec` with the
 * controller user through the third server, `serve --discover` and a plan's NATS query.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { guestlinkArgs } from "../helpers/bin.ts";
import { runCli } from "../helpers/cli.ts";
import { requires } from "../helpers/requires.ts";
import { until } from "../helpers/until.ts";

const skip = requires("nats-server");
const GUIDE = readFileSync(
  fileURLToPath(new URL("../../docs/guides/nats.md", import.meta.url)),
  "utf8",
);

/** The ```lang block that follows the line `` `NAME`: `` in the guide. */
function file(name: string): string {
  const m = new RegExp(
    `^\`${name.replace(".", "\\.")}\`:\\n\\n\`\`\`conf\\n([\\s\\S]*?)\`\`\``,
    "m",
  ).exec(GUIDE);
  assert.ok(m?.[1], `the guide shows ${name}`);
  return m[1];
}

/** The guide's commands in the ```sh block that starts with `first`. */
function commands(first: string): string[] {
  const block = GUIDE.split("```sh\n").find((b) => b.startsWith(first));
  assert.ok(block, `the guide has a block starting ${first}`);
  return block
    .slice(0, block.indexOf("```"))
    .split("\n")
    .filter((l) => l.startsWith("guestlink "));
}

/** `guestlink a 'b c' d` → ["a", "b c", "d"] (the guide quotes with single quotes only). */
function words(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string).slice(1);
}

describe("docs/guides/nats.md", { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "guestlink-nats-guide-"));
  const children: ChildProcess[] = [];

  function start(args: string[], what: string, ready: (log: string) => boolean): Promise<string> {
    const child = spawn(args[0] as string, args.slice(1), {
      cwd: dir,
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(child);
    let log = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      log += d;
    });
    return until(`${what} (${log})`, () => {
      if (child.exitCode !== null) throw new Error(`${what} exited: ${log}`);
      return ready(log) ? log : undefined;
    });
  }

  before(async () => {
    // Debian's package starts a nats-server of its own on 127.0.0.1:4222 where systemd runs.
    for (const port of [4222, 4223, 4224, 6222, 6223, 6224, 8222, 8223, 8224]) {
      const taken = await new Promise<boolean>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port }, () => {
          socket.destroy();
          resolve(true);
        });
        socket.on("error", () => resolve(false));
      });
      assert.ok(
        !taken,
        `port ${port} is taken, and the guide's servers need it (Debian's nats-server service? systemctl stop nats-server)`,
      );
    }
    for (const name of ["users.conf", "n1.conf", "n2.conf", "n3.conf"]) {
      writeFileSync(join(dir, name), file(name));
    }
    for (const n of ["n1", "n2", "n3"]) {
      await start(["nats-server", "-c", `${n}.conf`], `nats-server ${n}`, (log) =>
        log.includes("Server is ready"),
      );
    }
    await until("the guide's cluster routes", async () => {
      for (const port of [8222, 8223, 8224]) {
        const routez = (await (await fetch(`http://127.0.0.1:${port}/routez`)).json()) as {
          num_routes: number;
        };
        if (routez.num_routes < 2) return undefined;
      }
      return true;
    });
  });

  after(async () => {
    for (const c of children.reverse()) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill("SIGKILL");
        await once(c, "exit");
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs the guide's commands: agents on two servers, ls and exec through the third", async () => {
    const lines = commands("guestlink agent --listen nats://agent:");
    for (const line of lines.filter((l) => l.endsWith("&"))) {
      const args = words(line.slice(0, -1).trim());
      await start([process.execPath, ...guestlinkArgs(args)], line, (log) =>
        log.includes("agent started"),
      );
    }
    const rest = lines.filter((l) => !l.endsWith("&"));
    assert.equal(rest.length, 3);
    const ls = await runCli(words(rest[0] as string));
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^io-1\s+nats:\/\/127\.0\.0\.1:4224\/io-1\s/m);
    assert.match(ls.stdout, /^io-2\s+nats:\/\/127\.0\.0\.1:4224\/io-2\s/m);
    for (const line of rest.slice(1)) {
      const r = await runCli(words(line));
      assert.equal(r.stdout, "Linux\n", `${line}: ${r.stderr}`);
    }
  });

  it("its users may do only what they need: the agent user cannot dial an agent", async () => {
    const r = await runCli([
      "exec",
      "--connect-timeout",
      "2",
      "nats://agent:agent-secret@127.0.0.1:4224/io-1",
      "--",
      "true",
    ]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /\[CONNECT_FAILED\]\n$/);
  });

  it("serve --discover as the guide writes it holds the agents", async () => {
    const [serveLine, execLine] = commands("guestlink serve --discover 'nats://");
    const socket = join(dir, "serve.sock");
    const env = { GUESTLINK_SOCKET: socket };
    await start(
      [
        process.execPath,
        ...guestlinkArgs([...words(serveLine as string), "--socket", socket, "--http", "off"]),
      ],
      "the daemon",
      (log) => log.includes("daemon running"),
    );
    await until("io-1 and io-2 up", async () => {
      const ls = await runCli(["ls", "--json"], { env });
      const { agents } = JSON.parse(ls.stdout) as { agents: { id: string; state: string }[] };
      const up = agents.filter((a) => a.state === "up").map((a) => a.id);
      return up.includes("io-1") && up.includes("io-2") ? true : undefined;
    });
    const r = await runCli(words(execLine as string), { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /load average/);
    // The daemon dials with the password; its API and ls show the addresses without it.
    const ls = await runCli(["ls"], { env });
    assert.match(ls.stdout, /^io-1\s+up\s.*nats:\/\/127\.0\.0\.1:4224\/io-1/m);
    assert.doesNotMatch(ls.stdout, /secret/);
  });

  it("the guide's plan runs on the agents its query finds", async () => {
    const plan = /```yaml\n(name: io-across-hosts[\s\S]*?)```/.exec(GUIDE)?.[1];
    assert.ok(plan, "the guide has the plan");
    // Shorter and in this test's folder; the agents are the query's.
    const path = join(dir, "plan.yaml");
    writeFileSync(
      path,
      plan
        .replace("duration: 30s", "duration: 1s")
        .replace("/var/tmp/guestlink-io", join(dir, "io")),
    );
    const r = await runCli(["run", path, "--results", join(dir, "results")]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(readFileSync(join(dir, "results", "summary.json"), "utf8"));
    assert.deepEqual(summary.agents.map((a: { id: string }) => a.id).sort(), ["io-1", "io-2"]);
  });
});
