/**
 * What going through NATS costs (transport/nats.ts), against tcp: to the same far end, and
 * against a bare nats.js request/reply through the same server, in the same run, the cases
 * taking turns. One nats-server on loopback (test/helpers/nats-server.ts), started here.
 *
 * - exec throughput: `guestlink exec ADDR -- head -c 256M /dev/zero` (32 MiB with --quick)
 *   through the shipped CLI (bin/guestlink: build first) against a real agent that listens on
 *   both a tcp: and a nats: address; MB/s from spawn to exit, stdout counted.
 * - a session stream ("produce", what exec's output rides on), MB/s, through the library.
 * - 64 calls in flight: echo calls per second (64-byte params); the bare nats.js case is 64
 *   requests in flight on `bench.echo`.
 * - round trip: one echo call at a time, median and p99 in µs; bare: `nc.request` on
 *   `bench.echo`, answered by a nats.js responder in the far-end process.
 *
 * The far end is bench/nats-far-end.ts, a process of its own, from the TypeScript source.
 * MB = 10^6 bytes.
 */
import { spawn } from "node:child_process";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { openSession } from "../src/platform/session.ts";
import type { Session } from "../src/session/session.ts";
import type { SessionStream } from "../src/session/stream.ts";
import { startAgentAt } from "../test/helpers/agent-process.ts";
import { guestlinkArgs } from "../test/helpers/bin.ts";
import { startNatsServers } from "../test/helpers/nats-server.ts";
import { freePort } from "../test/helpers/ports.ts";
import {
  type BenchOptions,
  type BenchReport,
  formatNumber,
  measureRates,
  median,
  now,
  percentile,
  round,
  runOptions,
  sampleDurations,
  startHelper,
  table,
} from "./lib.ts";
import { SOURCE_LIB } from "./session-server.ts";

const MiB = 1024 * 1024;
const MB = 1e6;
const IN_FLIGHT = 64;

const FULL = { execBytes: 256 * MiB, streamBytes: 256 * MiB, runs: 3, batch: 5_000, trips: 2_000 };
const QUICK = { execBytes: 32 * MiB, streamBytes: 32 * MiB, runs: 1, batch: 1_000, trips: 200 };

type Case = "tcp" | "nats";

/** `total` calls of `call`, `depth` in flight; resolves with `total`. */
function pipelined(call: () => Promise<unknown>, total: number, depth: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    const startOne = () => {
      started++;
      call().then(() => {
        finished++;
        if (started < total) startOne();
        else if (finished === total) resolve(total);
      }, reject);
    };
    for (let i = 0; i < Math.min(depth, total); i++) startOne();
  });
}

const payload = new Uint8Array(64).fill(7);

function echo(session: Session): () => Promise<unknown> {
  return async () => {
    const value = await session.call("echo", payload);
    if (!(value instanceof Uint8Array) || value.length !== payload.length) {
      throw new Error("echo answered with something else");
    }
  };
}

function bareEcho(nc: NatsConnection): () => Promise<unknown> {
  return async () => {
    const reply = await nc.request("bench.echo", payload, { timeout: 10_000 });
    if (reply.data.length !== payload.length) throw new Error("bare echo answered wrong");
  };
}

/** MB/s of one "produce" stream of `bytes`, checked for its length. */
async function stream(session: Session, bytes: number): Promise<number> {
  const start = now();
  const call = session.open("produce", { bytes }, { streams: ["out"] });
  let received = 0;
  for await (const chunk of SOURCE_LIB.toDuplex(call.streams.out as SessionStream)) {
    received += (chunk as Buffer).length;
  }
  if (received !== bytes || (await call.result) !== bytes) {
    throw new Error(`stream: asked for ${bytes} bytes, got ${received}`);
  }
  return bytes / MB / ((now() - start) / 1000);
}

/** MB/s of `guestlink exec ADDR -- head -c BYTES /dev/zero`, spawn to exit, stdout counted. */
async function exec(address: string, bytes: number): Promise<number> {
  const start = now();
  const child = spawn(
    process.execPath,
    guestlinkArgs(["exec", address, "--", "head", "-c", String(bytes), "/dev/zero"]),
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let received = 0;
  child.stdout.on("data", (d: Buffer) => {
    received += d.length;
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  if (code !== 0 || received !== bytes) {
    throw new Error(`exec ${address}: exit ${code}, ${received} of ${bytes} bytes`);
  }
  return bytes / MB / ((now() - start) / 1000);
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const servers = await startNatsServers(1);
  const natsUrl = servers[0]?.url as string;
  const tcpPort = await freePort();
  const agentTcp = await freePort();
  const helper = await startHelper("bench/nats-far-end.ts", [String(tcpPort), natsUrl]);
  const agent = await startAgentAt(`tcp:127.0.0.1:${agentTcp}`, {
    args: ["--listen", `${natsUrl}/bench-agent`],
  });
  const sessions: Session[] = [];
  let nc: NatsConnection | undefined;
  try {
    const s: Record<Case, Session> = {
      tcp: await openSession(`tcp:127.0.0.1:${tcpPort}`),
      nats: await openSession(`${natsUrl}/bench`),
    };
    sessions.push(s.tcp, s.nats);
    nc = await connect({ servers: natsUrl.replace(/^nats:\/\//, "") });
    const bare = bareEcho(nc);

    // ---- round trip, one call at a time, the cases taking turns in slices ----
    const trips: Record<Case | "bare", number[]> = { tcp: [], nats: [], bare: [] };
    const slice = Math.max(1, Math.floor(cfg.trips / 10));
    for (let done = 0; done < cfg.trips; done += slice) {
      trips.tcp.push(...(await sampleDurations(slice, echo(s.tcp), done === 0 ? 50 : 0)));
      trips.nats.push(...(await sampleDurations(slice, echo(s.nats), done === 0 ? 50 : 0)));
      trips.bare.push(...(await sampleDurations(slice, bare, done === 0 ? 50 : 0)));
    }
    const us = (ms: number[], p: number) => percentile(ms, p) * 1000;

    // ---- 64 calls in flight ----
    const rates = await measureRates(
      {
        tcp: () => pipelined(echo(s.tcp), cfg.batch, IN_FLIGHT),
        nats: () => pipelined(echo(s.nats), cfg.batch, IN_FLIGHT),
        bare: () => pipelined(bare, cfg.batch, IN_FLIGHT),
      },
      runOptions(opts),
    );

    // ---- a session stream, then exec through the CLI; one untimed warm-up of each ----
    const streamMBps: Record<Case, number[]> = { tcp: [], nats: [] };
    const execMBps: Record<Case, number[]> = { tcp: [], nats: [] };
    const agentAt: Record<Case, string> = {
      tcp: `tcp:127.0.0.1:${agentTcp}`,
      nats: `${natsUrl}/bench-agent`,
    };
    for (const k of ["tcp", "nats"] as const) {
      await stream(s[k], 16 * MiB);
      await exec(agentAt[k], 16 * MiB);
    }
    for (let r = 0; r < cfg.runs; r++) {
      for (const k of ["tcp", "nats"] as const) {
        streamMBps[k].push(await stream(s[k], cfg.streamBytes));
        execMBps[k].push(await exec(agentAt[k], cfg.execBytes));
      }
    }

    const m = {
      exec: { tcp: median(execMBps.tcp), nats: median(execMBps.nats) },
      stream: { tcp: median(streamMBps.tcp), nats: median(streamMBps.nats) },
      calls: { tcp: rates.tcp.median, nats: rates.nats.median, bare: rates.bare.median },
      rtt: {
        tcp: us(trips.tcp, 50),
        nats: us(trips.nats, 50),
        bare: us(trips.bare, 50),
      },
      rtt99: { tcp: us(trips.tcp, 99), nats: us(trips.nats, 99), bare: us(trips.bare, 99) },
    };
    const text = [
      table(
        ["median (same run, cases taking turns)", "tcp:", "nats:", "nats / tcp"],
        [
          [
            `exec head -c ${cfg.execBytes / MiB}M through the CLI, MB/s (${cfg.runs} runs)`,
            formatNumber(m.exec.tcp),
            formatNumber(m.exec.nats),
            (m.exec.nats / m.exec.tcp).toFixed(2),
          ],
          [
            `session stream of ${cfg.streamBytes / MiB} MiB, MB/s (${cfg.runs} runs)`,
            formatNumber(m.stream.tcp),
            formatNumber(m.stream.nats),
            (m.stream.nats / m.stream.tcp).toFixed(2),
          ],
          [
            `${IN_FLIGHT} calls in flight, calls/s`,
            formatNumber(m.calls.tcp),
            formatNumber(m.calls.nats),
            (m.calls.nats / m.calls.tcp).toFixed(2),
          ],
          [
            "round trip of one call, µs (p50)",
            formatNumber(m.rtt.tcp),
            formatNumber(m.rtt.nats),
            (m.rtt.nats / m.rtt.tcp).toFixed(2),
          ],
        ],
      ),
      "",
      table(
        ["over the same nats-server", "guestlink call", "bare nats.js request", "guestlink / bare"],
        [
          [
            "round trip, µs (p50)",
            formatNumber(m.rtt.nats),
            formatNumber(m.rtt.bare),
            (m.rtt.nats / m.rtt.bare).toFixed(2),
          ],
          [
            "round trip, µs (p99)",
            formatNumber(m.rtt99.nats),
            formatNumber(m.rtt99.bare),
            (m.rtt99.nats / m.rtt99.bare).toFixed(2),
          ],
          [
            `${IN_FLIGHT} in flight, per second`,
            formatNumber(m.calls.nats),
            formatNumber(m.calls.bare),
            (m.calls.nats / m.calls.bare).toFixed(2),
          ],
        ],
      ),
    ].join("\n");
    return {
      text,
      figures: {
        execBytes: cfg.execBytes,
        execMBps: { tcp: round(m.exec.tcp), nats: round(m.exec.nats) },
        execRatio: round(m.exec.nats / m.exec.tcp, 2),
        streamMBps: { tcp: round(m.stream.tcp), nats: round(m.stream.nats) },
        callsPerS: {
          tcp: round(m.calls.tcp),
          nats: round(m.calls.nats),
          bare: round(m.calls.bare),
        },
        roundTripUs: { tcp: round(m.rtt.tcp), nats: round(m.rtt.nats), bare: round(m.rtt.bare) },
        roundTripP99Us: {
          tcp: round(m.rtt99.tcp),
          nats: round(m.rtt99.nats),
          bare: round(m.rtt99.bare),
        },
      },
    };
  } finally {
    for (const session of sessions) await session.close().catch(() => {});
    await nc?.close().catch(() => {});
    await agent.kill();
    await helper.stop();
    await servers.stop();
  }
}
