/** `guestlink info ADDR`: who and what the agent is. */
import type { Command } from "commander";
import type { AgentInfo } from "../agent/info.ts";
import { agentCommand, connectAgent, formatBytes, printJson, table } from "./common.ts";

function uptime(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${d ? `${d}d ` : ""}${h}h ${m}m`;
}

export function registerInfo(program: Command): void {
  agentCommand(
    program,
    "info",
    "show the agent's version, host, OS, kernel, uptime, CPUs, memory and services",
  )
    .addHelpText(
      "after",
      "\nExamples:\n  guestlink info unix:/run/guestlink.sock\n  guestlink info tcp:10.0.0.5:7070 --json\n",
    )
    .action(async (address: string, opts: { json?: boolean; connectTimeout: number }) => {
      const session = await connectAgent(address, opts);
      try {
        const info = (await session.call("info")) as AgentInfo;
        const extra = { rttMs: session.rttMs, clockOffsetMs: session.clockOffsetMs };
        if (opts.json) {
          printJson({ ...info, session: { address, peer: session.peer?.id, ...extra } });
          return;
        }
        process.stdout.write(
          `${table([
            [
              "agent",
              `${session.peer?.id ?? "?"} (guestlink ${info.agent.version}, protocol ${info.agent.protocol}, node ${info.agent.node}, pid ${info.agent.pid})`,
            ],
            ["host", info.hostname],
            ["os", `${info.os.type} ${info.os.release} ${info.os.arch}`],
            ["uptime", uptime(info.uptimeSeconds)],
            ["cpus", `${info.cpus.count} × ${info.cpus.model}`],
            [
              "memory",
              `${formatBytes(info.memory.availableBytes)} available of ${formatBytes(info.memory.totalBytes)}`,
            ],
            ["services", info.services.join(", ")],
            ["round trip", extra.rttMs === undefined ? "-" : `${extra.rttMs.toFixed(3)} ms`],
            [
              "clock offset",
              extra.clockOffsetMs === undefined ? "-" : `${extra.clockOffsetMs.toFixed(1)} ms`,
            ],
          ])}\n`,
        );
      } finally {
        await session.close();
      }
    });
}
