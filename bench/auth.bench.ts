/**
 * What a key costs on tcp: (TLS 1.3 with a pre-shared key, transport/tls.ts), against the same
 * session over plain tcp:, in the same run, the cases taking turns:
 *
 * - one stream of 1 GiB (64 MiB with --quick): MB/s of a "produce" stream read through toDuplex;
 * - 64 calls in flight: echo calls per second (64-byte params);
 * - connect: the time to open a session (TCP connect, TLS handshake, HELLO exchange).
 *
 * The far end is bench/auth-server.ts, a process of its own on loopback; both ends run from the
 * TypeScript source.
 */
import { randomBytes } from "node:crypto";
import { openSession } from "../src/platform/session.ts";
import type { Session } from "../src/session/session.ts";
import type { SessionStream } from "../src/session/stream.ts";
import { freePort } from "../test/helpers/ports.ts";
import {
  type BenchOptions,
  type BenchReport,
  formatNumber,
  measureRates,
  median,
  now,
  round,
  runOptions,
  sampleDurations,
  startHelper,
  summarize,
  table,
} from "./lib.ts";
import { SOURCE_LIB } from "./session-server.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MB = 1e6;
const IN_FLIGHT = 64;

const FULL = { streamBytes: 1 * GiB, streamRuns: 3, pipelineBatch: 20_000, connects: 50 };
const QUICK = { streamBytes: 64 * MiB, streamRuns: 1, pipelineBatch: 2_000, connects: 10 };

/** `total` echo calls, `depth` in flight; resolves with `total`. */
function pipelined(session: Session, total: number, depth: number): Promise<number> {
  const payload = new Uint8Array(64).fill(7);
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    const startOne = () => {
      started++;
      session.call("echo", payload).then((value) => {
        if (!(value instanceof Uint8Array) || value.length !== payload.length) {
          reject(new Error("echo answered with something else"));
          return;
        }
        finished++;
        if (started < total) startOne();
        else if (finished === total) resolve(total);
      }, reject);
    };
    for (let i = 0; i < Math.min(depth, total); i++) startOne();
  });
}

/** MB/s of one "produce" stream of `bytes`, checked for its length. */
async function stream(session: Session, bytes: number): Promise<number> {
  const start = now();
  const call = session.open("produce", { bytes }, { streams: ["out"] });
  let received = 0;
  for await (const chunk of SOURCE_LIB.toDuplex(call.streams.out as SessionStream)) {
    received += (chunk as Buffer).length;
  }
  const result = await call.result;
  if (received !== bytes || result !== bytes) {
    throw new Error(`stream: asked for ${bytes} bytes, got ${received}`);
  }
  return bytes / MB / ((now() - start) / 1000);
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const key = randomBytes(32);
  const [plainPort, keyedPort] = [await freePort(), await freePort()];
  const helper = await startHelper("bench/auth-server.ts", [
    String(plainPort),
    String(keyedPort),
    key.toString("hex"),
  ]);
  const open = (keyed: boolean) =>
    openSession(`tcp:127.0.0.1:${keyed ? keyedPort : plainPort}`, keyed ? { key } : {});
  const sessions: Session[] = [];
  try {
    const plain = await open(false);
    const keyed = await open(true);
    sessions.push(plain, keyed);

    // ---- connect: a new session each time, the cases taking turns ----
    const connectMs: Record<"plain" | "keyed", number[]> = { plain: [], keyed: [] };
    for (let i = 0; i < cfg.connects; i++) {
      for (const k of ["plain", "keyed"] as const) {
        const [ms] = await sampleDurations(
          1,
          async () => {
            const s = await open(k === "keyed");
            s.abort();
          },
          i === 0 ? 1 : 0,
        );
        connectMs[k].push(ms as number);
      }
    }

    // ---- 64 calls in flight ----
    const rates = await measureRates(
      {
        plain: () => pipelined(plain, cfg.pipelineBatch, IN_FLIGHT),
        keyed: () => pipelined(keyed, cfg.pipelineBatch, IN_FLIGHT),
      },
      runOptions(opts),
    );

    // ---- one long stream, the cases taking turns; one untimed warm-up of each ----
    await stream(plain, 16 * MiB);
    await stream(keyed, 16 * MiB);
    const mbps: Record<"plain" | "keyed", number[]> = { plain: [], keyed: [] };
    for (let r = 0; r < cfg.streamRuns; r++) {
      mbps.plain.push(await stream(plain, cfg.streamBytes));
      mbps.keyed.push(await stream(keyed, cfg.streamBytes));
    }

    const streamPlain = median(mbps.plain);
    const streamKeyed = median(mbps.keyed);
    const callsPlain = rates.plain.median;
    const callsKeyed = rates.keyed.median;
    const connectPlain = summarize(connectMs.plain).median;
    const connectKeyed = summarize(connectMs.keyed).median;
    const size =
      cfg.streamBytes >= GiB ? `${cfg.streamBytes / GiB} GiB` : `${cfg.streamBytes / MiB} MiB`;
    const text = table(
      ["tcp:127.0.0.1 (median)", "no key", "key (TLS 1.3 PSK)", "key / no key"],
      [
        [
          `stream of ${size}, MB/s (${cfg.streamRuns} runs)`,
          formatNumber(streamPlain),
          formatNumber(streamKeyed),
          (streamKeyed / streamPlain).toFixed(2),
        ],
        [
          `${IN_FLIGHT} calls in flight, calls/s`,
          formatNumber(callsPlain),
          formatNumber(callsKeyed),
          (callsKeyed / callsPlain).toFixed(2),
        ],
        [
          `open a session, ms (${cfg.connects} each)`,
          connectPlain.toFixed(2),
          connectKeyed.toFixed(2),
          (connectKeyed / connectPlain).toFixed(2),
        ],
      ],
    );
    return {
      text,
      figures: {
        streamBytes: cfg.streamBytes,
        streamMBps: { plain: round(streamPlain), keyed: round(streamKeyed) },
        streamRatio: round(streamKeyed / streamPlain, 2),
        streamRuns: {
          plain: mbps.plain.map((v) => round(v)),
          keyed: mbps.keyed.map((v) => round(v)),
        },
        callsPerS: { plain: round(callsPlain), keyed: round(callsKeyed) },
        callsRatio: round(callsKeyed / callsPlain, 2),
        connectMs: { plain: round(connectPlain, 2), keyed: round(connectKeyed, 2) },
      },
    };
  } finally {
    for (const s of sessions) await s.close().catch(() => {});
    await helper.stop();
  }
}
