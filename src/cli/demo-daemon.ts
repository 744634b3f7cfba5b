/** The demo's last step: the host daemon holding the demo's agents, its dashboard, `@ID`. */
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { remoteExec } from "../controller/exec.ts";
import { openDaemonSession } from "../daemon/client.ts";
import { readServeConfig } from "../daemon/config.ts";
import { Daemon } from "../daemon/daemon.ts";
import { DEFAULT_HTTP } from "../daemon/paths.ts";
import { isGuestlinkError } from "../errors.ts";

export interface DaemonDemo {
  daemon: Daemon;
  up: number;
  /** What `exec @vm-1 -- hostname` printed through the daemon. */
  viaDaemon: string;
  url: string | undefined;
}

/** Starts the daemon over `agents` (id → address); waits (bounded) until they are up. */
export async function runDaemonDemo(
  agents: readonly (readonly [string, string])[],
  dir: string,
  say: (line: string) => void,
): Promise<DaemonDemo> {
  const socket = join(dir, "serve.sock");
  const config = (http: string) =>
    readServeConfig({
      agents: agents.map(([id, address]) => ({ id, address })),
      socket,
      http,
    });
  say(
    `      guestlink serve ${agents.map(([id, a]) => `--agent ${id}=${a}`).join(" ")} --socket ${socket}`,
  );
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(config(DEFAULT_HTTP));
  } catch (err) {
    // Another daemon (or a demo left running with --keep) has the port: any free one will do.
    if (!isGuestlinkError(err, "ADDRESS_IN_USE")) throw err;
    daemon = await Daemon.start(config("127.0.0.1:0"));
  }
  const end = performance.now() + 10_000;
  const upCount = () => [...daemon.agents.values()].filter((a) => a.state === "up").length;
  while (upCount() < agents.length && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const session = await openDaemonSession(agents[0]?.[0] as string, { socketPath: socket });
  const out = new PassThrough();
  let viaDaemon = "";
  out.on("data", (d: Buffer) => {
    viaDaemon += d.toString();
  });
  await remoteExec(
    session,
    { argv: ["sh", "-c", "echo $$ answered through the daemon"] },
    { stdout: out, stderr: new PassThrough().resume() },
  );
  await session.close();
  return {
    daemon,
    up: upCount(),
    viaDaemon: viaDaemon.trim(),
    url: daemon.httpAddress === undefined ? undefined : `http://${daemon.httpAddress}/`,
  };
}
