/**
 * A daemon (`Daemon.start`) holding one real agent process, "vm-1", and one that never answers,
 * "down-1", with its API on loopback TCP (a free port) and a Unix socket in a temporary folder.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readServeConfig } from "../../src/daemon/config.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";

export interface HeldFixture {
  dir: string;
  /** The agent's working folder. */
  remote: string;
  agent: AgentProcess;
  daemon: Daemon;
  /** `127.0.0.1:PORT` */
  http: string;
  stop(): Promise<void>;
}

export async function startHeld(name: string): Promise<HeldFixture> {
  const dir = await mkdtemp(join(tmpdir(), `guestlink-${name}-`));
  const remote = join(dir, "remote");
  await mkdir(remote);
  const agent = await startAgent(join(dir, "agent.sock"), { cwd: remote });
  const daemon = await Daemon.start(
    readServeConfig({
      agents: [
        { id: "vm-1", address: agent.address },
        { id: "down-1", address: `unix:${join(dir, "nobody.sock")}` },
      ],
      socket: join(dir, "serve.sock"),
      http: "127.0.0.1:0",
    }),
  );
  const held = daemon.agents.get("vm-1");
  if (held?.state !== "up") {
    await new Promise<void>((resolve) => {
      const off = daemon.onEvent((e) => {
        if (e.type === "state" && e.id === "vm-1" && e.state === "up") {
          off();
          resolve();
        }
      });
    });
  }
  return {
    dir,
    remote,
    agent,
    daemon,
    http: daemon.httpAddress as string,
    async stop() {
      await daemon.close();
      await agent.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves once `check()` is true (looked at every 50 ms), or rejects after `ms`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
