/**
 * The telemetry service: `telemetry.watch` writes one JSON line (NDJSON) per interval on its
 * "samples" stream until the caller cancels. A reader that falls behind does not make samples
 * pile up: while the stream is full, samples are skipped (and counted in the next one), so a
 * watch costs the same memory however long it runs.
 */

import { readFile, statfs } from "node:fs/promises";
import os from "node:os";
import { performance } from "node:perf_hooks";
import * as v from "valibot";
import { pause } from "../platform/node.ts";
import type { CallContext } from "../session/session.ts";
import { availableMemoryBytes } from "./info.ts";
import { parseParams, requireStream } from "./params.ts";
import type { Service } from "./service.ts";
import {
  DEFAULT_TELEMETRY_INTERVAL_MS,
  MAX_TELEMETRY_INTERVAL_MS,
  MIN_TELEMETRY_INTERVAL_MS,
} from "./telemetry-interval.ts";

export {
  DEFAULT_TELEMETRY_INTERVAL_MS,
  MAX_TELEMETRY_INTERVAL_MS,
  MIN_TELEMETRY_INTERVAL_MS,
} from "./telemetry-interval.ts";

export interface TelemetrySample {
  /** Wall clock when the sample was taken, ms since the epoch. */
  t: number;
  /** `usage`: busy fraction of all CPUs (0..1) since the previous sample (the first: since boot). */
  cpu: { usage: number; count: number };
  memory: { totalBytes: number; availableBytes: number; usedBytes: number };
  /** 1, 5 and 15 minute load averages (zeros where the OS has none). */
  load: number[];
  /** `freeBytes`: what an unprivileged user may still write. */
  disks: { path: string; totalBytes: number; freeBytes: number }[];
  /** Bytes through each network interface since boot (Linux; empty elsewhere). */
  net: { iface: string; rxBytes: number; txBytes: number }[];
  process: { rssBytes: number };
  /** Samples not sent since the previous one because the reader was behind. */
  skipped?: number;
}

const WatchParams = v.optional(
  v.object({
    intervalMs: v.optional(
      v.pipe(
        v.number("must be a number"),
        v.integer("must be an integer"),
        v.minValue(
          MIN_TELEMETRY_INTERVAL_MS,
          `must be from ${MIN_TELEMETRY_INTERVAL_MS} to ${MAX_TELEMETRY_INTERVAL_MS}`,
        ),
        v.maxValue(
          MAX_TELEMETRY_INTERVAL_MS,
          `must be from ${MIN_TELEMETRY_INTERVAL_MS} to ${MAX_TELEMETRY_INTERVAL_MS}`,
        ),
      ),
      DEFAULT_TELEMETRY_INTERVAL_MS,
    ),
  }),
  {},
);

/** Folders whose file systems are reported. */
const DISK_PATHS = ["/"];

interface CpuTimes {
  idle: number;
  total: number;
}

function cpuTimes(cpus: os.CpuInfo[]): CpuTimes {
  let idle = 0;
  let total = 0;
  for (const { times } of cpus) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.irq + times.idle;
  }
  return { idle, total };
}

async function disks(): Promise<TelemetrySample["disks"]> {
  const out: TelemetrySample["disks"] = [];
  for (const path of DISK_PATHS) {
    try {
      const fs = await statfs(path);
      out.push({ path, totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize });
    } catch {
      // A folder that cannot be inspected here is left out rather than failing the watch.
    }
  }
  return out;
}

/** Parses /proc/net/dev: two header lines, then `iface: rx_bytes … (8 rx fields) tx_bytes …`. */
export function parseNetDev(text: string): TelemetrySample["net"] {
  const out: TelemetrySample["net"] = [];
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    const rxBytes = fields[0];
    const txBytes = fields[8];
    if (rxBytes === undefined || txBytes === undefined) continue;
    if (!Number.isFinite(rxBytes) || !Number.isFinite(txBytes)) continue;
    out.push({ iface: line.slice(0, colon).trim(), rxBytes, txBytes });
  }
  return out;
}

async function network(): Promise<TelemetrySample["net"]> {
  if (process.platform !== "linux") return [];
  try {
    return parseNetDev(await readFile("/proc/net/dev", "utf8"));
  } catch {
    return [];
  }
}

/** Takes samples; CPU usage is measured between consecutive ones. */
export class Sampler {
  #previous: CpuTimes = { idle: 0, total: 0 };

  async sample(): Promise<TelemetrySample> {
    const cpus = os.cpus();
    const now = cpuTimes(cpus);
    const total = now.total - this.#previous.total;
    const idle = now.idle - this.#previous.idle;
    this.#previous = now;
    const usage = total > 0 ? Math.min(1, Math.max(0, 1 - idle / total)) : 0;
    const totalBytes = os.totalmem();
    const [availableBytes, diskList, net] = await Promise.all([
      availableMemoryBytes(),
      disks(),
      network(),
    ]);
    return {
      t: Date.now(),
      cpu: { usage, count: cpus.length },
      memory: { totalBytes, availableBytes, usedBytes: Math.max(0, totalBytes - availableBytes) },
      load: os.loadavg(),
      disks: diskList,
      net,
      process: { rssBytes: process.memoryUsage.rss() },
    };
  }
}

export function telemetryService(): Service {
  const watch = async (params: unknown, ctx: CallContext) => {
    const { intervalMs } = parseParams(ctx.method, WatchParams, params);
    const out = requireStream(ctx, "samples");
    const sampler = new Sampler();
    let samples = 0;
    let skipped = 0;
    let full = false;
    while (!ctx.signal.aborted && !out.closed) {
      const started = performance.now();
      if (full) {
        skipped++;
      } else {
        const sample = await sampler.sample();
        if (ctx.signal.aborted || out.closed) break;
        if (skipped > 0) sample.skipped = skipped;
        skipped = 0;
        samples++;
        if (!out.write(Buffer.from(`${JSON.stringify(sample)}\n`))) {
          full = true;
          out.onDrain = () => {
            full = false;
          };
        }
      }
      await pause(intervalMs - (performance.now() - started), ctx.signal);
    }
    out.end();
    return { samples };
  };
  return { name: "telemetry", methods: { "telemetry.watch": watch } };
}
