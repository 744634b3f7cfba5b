/**
 * The demo's NATS step: an agent reached by its id through a nats-server on loopback, which is
 * killed and started again in the middle of a command; the command's output must arrive whole, in
 * order, with its exit status. Without nats-server on the PATH the step says so and is skipped.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { PassThrough } from "node:stream";
import { remoteExec } from "../controller/exec.ts";
import type { Session } from "../session/session.ts";
import { connectAgent } from "./common.ts";

export interface NatsDemo {
  /** Why the step did not run (no nats-server). */
  skipped?: string;
  ok: boolean;
  detail: string;
}

const LINES = 40;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts nats-server on `port`; resolves once it says it is ready (at most 10 s). */
async function startServer(port: number): Promise<ChildProcess> {
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port)], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not start: ${log}`)), 10_000);
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      log += d;
      if (log.includes("Server is ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", () => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited: ${log}`));
    });
  });
  return child;
}

async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  await once(child, "exit");
}

export async function runNatsDemo(bin: string, say: (line: string) => void): Promise<NatsDemo> {
  if (spawnSync("nats-server", ["--version"], { stdio: "ignore" }).status !== 0) {
    return {
      skipped: "nats-server is not installed (apt-get install nats-server)",
      ok: true,
      detail: "",
    };
  }
  const port = await freePort();
  const address = `nats://127.0.0.1:${port}/vm-nats`;
  let server: ChildProcess | undefined = await startServer(port);
  let agent: ChildProcess | undefined;
  let session: Session | undefined;
  try {
    say(`      nats-server -a 127.0.0.1 -p ${port}; guestlink agent --listen ${address}`);
    agent = spawn(
      process.execPath,
      [bin, "agent", "--listen", address, "--drain-timeout", "1", "--log-level", "error"],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    session = await connectAgent(address, { connectTimeout: 15 });
    let downMs = 0;
    session.onEvent((e) => {
      if (e.type === "resumed") downMs = e.downMs;
    });
    const out = new PassThrough();
    let text = "";
    let restarted: Promise<void> | undefined;
    out.on("data", (d: Buffer) => {
      text += d.toString();
      if (restarted === undefined && text.includes("line 5\n")) {
        restarted = (async () => {
          await stop(server, "SIGKILL");
          server = await startServer(port);
        })();
      }
    });
    const script = `i=1; while [ $i -le ${LINES} ]; do echo line $i; i=$((i+1)); sleep 0.05; done`;
    const result = await remoteExec(
      session,
      { argv: ["sh", "-c", script] },
      { stdout: out, stderr: new PassThrough().resume() },
    );
    await restarted;
    const expected = Array.from({ length: LINES }, (_, i) => `line ${i + 1}\n`).join("");
    say(
      `      nats-server killed (SIGKILL) after line 5 and started again; the session resumed after ${Math.round(downMs)} ms`,
    );
    return {
      ok: restarted !== undefined && result.status === 0 && text === expected,
      detail: `${text.split("\n").length - 1} of ${LINES} lines arrived, in order, exit ${result.status}, across the server's restart`,
    };
  } finally {
    await session?.close().catch(() => {});
    await stop(agent, "SIGTERM");
    await stop(server, "SIGTERM");
  }
}
