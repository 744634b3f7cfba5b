/** The info service: who and what the agent is, in one call. */
import { readFile } from "node:fs/promises";
import os from "node:os";
import * as v from "valibot";
import { PROTOCOL_VERSIONS } from "../session/messages.ts";
import type { CallContext } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { parseParams } from "./params.ts";
import type { Service } from "./service.ts";

export interface InfoServiceOptions {
  /**
   * The services this agent offers (its allow-list). Default: the services the session
   * advertises in its handshake, when it was given a list.
   */
  services?: () => string[];
}

export interface AgentInfo {
  agent: { version: string; pid: number; node: string; protocol: number };
  hostname: string;
  os: { platform: string; type: string; release: string; arch: string };
  kernel: string;
  uptimeSeconds: number;
  cpus: { count: number; model: string };
  memory: { totalBytes: number; freeBytes: number; availableBytes: number };
  services: string[];
}

/**
 * Memory that can be given to new work without swapping: Linux's MemAvailable (which counts
 * reclaimable caches, unlike `os.freemem()`), else what Node reports free.
 */
export async function availableMemoryBytes(): Promise<number> {
  if (process.platform === "linux") {
    try {
      const match = /^MemAvailable:\s+(\d+) kB$/m.exec(await readFile("/proc/meminfo", "utf8"));
      if (match?.[1]) return Number(match[1]) * 1024;
    } catch {
      // No /proc (a restricted container): fall back below.
    }
  }
  return os.freemem();
}

const InfoParams = v.optional(v.nullable(v.object({})));

export function infoService(options: InfoServiceOptions = {}): Service {
  const info = async (params: unknown, ctx: CallContext): Promise<AgentInfo> => {
    parseParams(ctx.method, InfoParams, params);
    const cpus = os.cpus();
    return {
      agent: {
        version: VERSION,
        pid: process.pid,
        node: process.version,
        protocol: ctx.session.peer?.protocol ?? PROTOCOL_VERSIONS[1],
      },
      hostname: os.hostname(),
      os: { platform: os.platform(), type: os.type(), release: os.release(), arch: os.arch() },
      kernel: os.release(),
      uptimeSeconds: os.uptime(),
      cpus: { count: cpus.length, model: cpus[0]?.model.trim() ?? "" },
      memory: {
        totalBytes: os.totalmem(),
        freeBytes: os.freemem(),
        availableBytes: await availableMemoryBytes(),
      },
      services: [...(options.services?.() ?? ctx.session.options.services ?? [])],
    };
  };
  return { name: "info", methods: { info } };
}
