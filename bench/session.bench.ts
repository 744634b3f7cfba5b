/**
 * Sessions over a Unix socket, each figure beside a bare-Node baseline measured in the same run:
 *
 * - one call in flight: round trip of a trivial "echo" call (median, p99), against a bare
 *   net.Socket echo of the same payload (write N bytes, wait for all N back, repeat), with the
 *   two processes pinned to different CPUs and then to one CPU (taskset, when it works);
 * - 64 calls in flight: calls per second, against the bare socket pipelined 64 deep with a
 *   4-byte length prefix per message (a minimal protocol, so the comparison is fair);
 * - one stream of 1 GiB: MB/s of a "produce" stream read through `toDuplex`, against a bare
 *   net.Socket sending the same bytes;
 * - a sweep of the stream window (session window 4x, the defaults' ratio) over a shorter stream.
 *
 * guestlink is measured as shipped: `src/` compiled by tsc (`buildLibrary`), not the source as tsx
 * transforms it (one extra row shows that). The far end runs in a separate process
 * (`bench/session-server.ts`), as a real agent does: two ends in one process share one thread.
 * That one process serves the baselines and guestlink alike, and the cases take turns, so a
 * baseline and the figure beside it see the same process, CPU placement and machine load.
 */
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import { join } from "node:path";
import type { NodeSessionOptions } from "../src/platform/session.ts";
// Found from src/platform/ as the built library finds it (bench/lib.ts links native/ beside it).
import { slabAddonPath } from "../src/platform/slabs.ts";
import {
  DEFAULT_SESSION_WINDOW_BYTES,
  DEFAULT_STREAM_WINDOW_BYTES,
} from "../src/session/options.ts";
import type { Session } from "../src/session/session.ts";
import type { SessionStream } from "../src/session/stream.ts";
import { encodeControl } from "../src/wire/control.ts";
import { HEADER_BYTES } from "../src/wire/frame.ts";
import {
  type BenchOptions,
  type BenchReport,
  buildLibrary,
  formatNumber,
  getAffinity,
  type Helper,
  measureRates,
  median,
  now,
  parseCpuList,
  type Rate,
  round,
  runOptions,
  type Summary,
  sampleDurations,
  setAffinity,
  startHelper,
  summarize,
  table,
  verdict,
} from "./lib.ts";
import {
  FRAME_PREFIX_BYTES,
  type GuestlinkLib,
  loadLib,
  RAW_ECHO,
  RAW_FRAMED,
  RAW_STREAM,
  SOURCE_LIB,
} from "./session-server.ts";

const SERVER_SCRIPT = "bench/session-server.ts";
/** Bytes of the echo payload: the call's params (a byte array), and the bare echo's message. */
const ECHO_PAYLOAD_BYTES = 64;
const IN_FLIGHT = 64;
/** Round trips in a row before the other side takes its turn. */
const LATENCY_BLOCK = 100;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const MB = 1e6;

/** Aims from the issue (informational: a miss does not fail the run). */
const AIM_LATENCY_RATIO = 1.3;
const AIM_CALLS_PER_S = 100_000;
const AIM_STREAM_RATIO = 0.5;

const SWEEP_STREAM_WINDOWS = [256 * KiB, 1 * MiB, 4 * MiB];
/** The session window in the sweep, as a multiple of the stream window (the defaults' ratio). */
const SESSION_WINDOW_FACTOR = DEFAULT_SESSION_WINDOW_BYTES / DEFAULT_STREAM_WINDOW_BYTES;
/** A window within this fraction of the sweep's best rate counts as good enough. */
const SWEEP_TOLERANCE = 0.05;

interface Config {
  /** Latency: round trips per side, the sides taking turns in blocks of LATENCY_BLOCK. */
  latencySamples: number;
  latencyWarmup: number;
  /** Calls per timed batch of the 64-deep pipeline. */
  pipelineBatch: number;
  streamBytes: number;
  streamRuns: number;
  sweepBytes: number;
  sweepRuns: number;
  /** One untimed transfer of this size per case first. */
  warmupStreamBytes: number;
}

const FULL: Config = {
  latencySamples: 10_000,
  latencyWarmup: 2_000,
  pipelineBatch: 20_000,
  streamBytes: 1 * GiB,
  streamRuns: 3,
  sweepBytes: 256 * MiB,
  sweepRuns: 7,
  warmupStreamBytes: 64 * MiB,
};

const QUICK: Config = {
  latencySamples: 1_000,
  latencyWarmup: 1_000,
  pipelineBatch: 2_000,
  streamBytes: 64 * MiB,
  streamRuns: 1,
  sweepBytes: 32 * MiB,
  sweepRuns: 1,
  warmupStreamBytes: 8 * MiB,
};

class CorrectnessError extends Error {
  override name = "CorrectnessError";
}

// ---- payloads ------------------------------------------------------------------------------

/** Writes `seq` into the first 4 bytes (little-endian); the rest is a fixed pattern. */
function stamp(payload: Uint8Array, seq: number): void {
  payload[0] = seq & 0xff;
  payload[1] = (seq >>> 8) & 0xff;
  payload[2] = (seq >>> 16) & 0xff;
  payload[3] = (seq >>> 24) & 0xff;
}

function stampOf(bytes: Uint8Array, at = 0): number {
  return (
    ((bytes[at] as number) |
      ((bytes[at + 1] as number) << 8) |
      ((bytes[at + 2] as number) << 16) |
      ((bytes[at + 3] as number) << 24)) >>>
    0
  );
}

function echoPayload(): Uint8Array {
  const payload = new Uint8Array(ECHO_PAYLOAD_BYTES);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
  return payload;
}

function checkEcho(value: unknown, seq: number): void {
  if (
    !(value instanceof Uint8Array) ||
    value.length !== ECHO_PAYLOAD_BYTES ||
    stampOf(value) !== seq >>> 0
  ) {
    throw new CorrectnessError(`echo ${seq}: got back ${describe(value)}`);
  }
}

function describe(value: unknown): string {
  return value instanceof Uint8Array
    ? `${value.length} bytes stamped ${value.length >= 4 ? stampOf(value) : "?"}`
    : typeof value;
}

// ---- the bare-socket baselines -------------------------------------------------------------

/** Connects to the bare server; a request byte `mode` goes first, when given. */
function connectRaw(path: string, mode?: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      if (mode !== undefined) socket.write(Buffer.from([mode]));
      resolve(socket);
    });
  });
}

/** One message in flight: write N bytes, wait until all N came back. */
class RawEchoClient {
  readonly #socket: net.Socket;
  readonly #payload = echoPayload();
  #seq = 0;
  #got: Buffer[] = [];
  #gotBytes = 0;
  #done: (() => void) | undefined;
  #fail: ((err: Error) => void) | undefined;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (err) => this.#fail?.(err));
  }

  roundTrip = (): Promise<void> => {
    const seq = this.#seq++;
    stamp(this.#payload, seq);
    return new Promise<void>((resolve, reject) => {
      this.#done = () => {
        const back = this.#got.length === 1 ? (this.#got[0] as Buffer) : Buffer.concat(this.#got);
        this.#got = [];
        this.#gotBytes = 0;
        if (back.length !== ECHO_PAYLOAD_BYTES || stampOf(back) !== seq >>> 0) {
          reject(new CorrectnessError(`raw echo ${seq}: got back ${describe(back)}`));
        } else resolve();
      };
      this.#fail = reject;
      // A copy: the socket may still hold the buffer when the next round trip restamps it.
      this.#socket.write(Buffer.from(this.#payload));
    });
  };

  #onData(chunk: Buffer): void {
    this.#got.push(chunk);
    this.#gotBytes += chunk.length;
    if (this.#gotBytes >= ECHO_PAYLOAD_BYTES) {
      const done = this.#done;
      this.#done = undefined;
      done?.();
    }
  }
}

/**
 * Messages with a 4-byte big-endian length prefix, kept `depth` deep: each read's answers are
 * parsed and checked, and the requests they make room for go out in one write.
 */
class RawFramedClient {
  readonly #socket: net.Socket;
  readonly #payload = echoPayload();
  #held: Buffer | undefined;
  #seq = 0;
  #expected = 0;
  #left = 0;
  #outstanding = 0;
  #done: ((n: number) => void) | undefined;
  #fail: ((err: Error) => void) | undefined;
  #batch = 0;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (err) => this.#fail?.(err));
  }

  run(total: number, depth: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#done = resolve;
      this.#fail = reject;
      this.#batch = total;
      this.#left = total;
      this.#send(Math.min(depth, total));
    });
  }

  #send(count: number): void {
    if (count === 0) return;
    const size = FRAME_PREFIX_BYTES + ECHO_PAYLOAD_BYTES;
    const out = Buffer.allocUnsafe(count * size);
    for (let i = 0; i < count; i++) {
      const at = i * size;
      out.writeUInt32BE(ECHO_PAYLOAD_BYTES, at);
      stamp(this.#payload, this.#seq++);
      out.set(this.#payload, at + FRAME_PREFIX_BYTES);
    }
    this.#left -= count;
    this.#outstanding += count;
    this.#socket.write(out);
  }

  #onData(chunk: Buffer): void {
    const buf = this.#held === undefined ? chunk : Buffer.concat([this.#held, chunk]);
    let at = 0;
    let answered = 0;
    while (buf.length - at >= FRAME_PREFIX_BYTES) {
      const length = buf.readUInt32BE(at);
      const end = at + FRAME_PREFIX_BYTES + length;
      if (end > buf.length) break;
      const seq = this.#expected++;
      if (length !== ECHO_PAYLOAD_BYTES || stampOf(buf, at + FRAME_PREFIX_BYTES) !== seq >>> 0) {
        this.#fail?.(new CorrectnessError(`raw framed echo ${seq}: wrong answer`));
        return;
      }
      answered++;
      at = end;
    }
    this.#held = at < buf.length ? buf.subarray(at) : undefined;
    this.#outstanding -= answered;
    this.#send(Math.min(answered, this.#left));
    if (this.#outstanding === 0 && this.#left === 0) this.#done?.(this.#batch);
  }
}

/** Receives `bytes` from the bare server; MB/s from the request to the last byte. */
async function rawStream(path: string, bytes: number): Promise<number> {
  const socket = await connectRaw(path);
  const request = Buffer.alloc(9);
  request[0] = RAW_STREAM;
  request.writeBigUInt64BE(BigInt(bytes), 1);
  const start = now();
  socket.write(request);
  let received = 0;
  for await (const chunk of socket) received += (chunk as Buffer).length;
  const seconds = (now() - start) / 1000;
  if (received !== bytes) {
    throw new CorrectnessError(`raw stream: asked for ${bytes} bytes, got ${received}`);
  }
  return bytes / MB / seconds;
}

// ---- guestlink ---------------------------------------------------------------------------

function guestlinkEcho(session: Session): () => Promise<void> {
  const payload = echoPayload();
  let seq = 0;
  return async () => {
    const mine = seq++;
    stamp(payload, mine); // call() encodes the params before it returns
    checkEcho(await session.call("echo", payload), mine);
  };
}

/** `total` echo calls, `depth` in flight: each one that resolves starts the next. */
function guestlinkPipelined(session: Session, total: number, depth: number): Promise<number> {
  const payload = echoPayload();
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    let failed = false;
    const startOne = () => {
      const seq = started++;
      stamp(payload, seq);
      session.call("echo", payload).then(
        (value) => {
          if (failed) return;
          try {
            checkEcho(value, seq);
          } catch (err) {
            failed = true;
            reject(err);
            return;
          }
          finished++;
          if (started < total) startOne();
          else if (finished === total) resolve(total);
        },
        (err: unknown) => {
          failed = true;
          reject(err);
        },
      );
    };
    for (let i = 0; i < Math.min(depth, total); i++) startOne();
  });
}

/** Reads a "produce" stream of `bytes` through `toDuplex`; MB/s from the call to its result. */
async function guestlinkStream(
  lib: GuestlinkLib,
  session: Session,
  bytes: number,
): Promise<number> {
  const start = now();
  const call = session.open("produce", { bytes }, { streams: ["out"] });
  let received = 0;
  for await (const chunk of lib.toDuplex(call.streams.out as SessionStream)) {
    received += (chunk as Buffer).length;
  }
  const result = await call.result;
  const seconds = (now() - start) / 1000;
  if (received !== bytes || result !== bytes) {
    throw new CorrectnessError(
      `guestlink stream: asked for ${bytes} bytes, got ${received} (result ${String(result)})`,
    );
  }
  return bytes / MB / seconds;
}

// ---- running -------------------------------------------------------------------------------

/** The helper, sessions and bare sockets, cleaned up in reverse order of creation. */
class Resources {
  readonly #cleanups: (() => Promise<unknown>)[] = [];

  add(cleanup: () => Promise<unknown>): void {
    this.#cleanups.push(cleanup);
  }

  async helper(args: string[]): Promise<Helper> {
    const helper = await startHelper(SERVER_SCRIPT, args);
    this.add(() => helper.stop());
    return helper;
  }

  async session(
    lib: GuestlinkLib,
    path: string,
    options: NodeSessionOptions = {},
  ): Promise<Session> {
    const session = await lib.openSession(`unix:${path}`, options);
    this.add(() => session.close());
    return session;
  }

  async raw(path: string, mode: number): Promise<net.Socket> {
    const socket = await connectRaw(path, mode);
    this.add(async () => socket.destroy());
    return socket;
  }

  async release(): Promise<void> {
    for (const cleanup of this.#cleanups.splice(0).reverse()) {
      await cleanup().catch(() => {});
    }
  }
}

/** Round-trip times of each case, the cases taking turns in blocks; milliseconds each. */
async function interleavedLatency<K extends string>(
  cases: Record<K, () => Promise<void>>,
  samples: number,
  warmup: number,
): Promise<Record<K, number[]>> {
  const names = Object.keys(cases) as K[];
  const out = new Map<K, number[]>(names.map((name) => [name, []]));
  for (const name of names) await sampleDurations(0, cases[name], warmup);
  for (let done = 0; done < samples; done += LATENCY_BLOCK) {
    const block = Math.min(LATENCY_BLOCK, samples - done);
    // One untimed round trip first: the first after the other side's turn is slower (caches,
    // the helper switching connections) and would otherwise be 1 in LATENCY_BLOCK samples.
    for (const name of names)
      out.get(name)?.push(...(await sampleDurations(block, cases[name], 1)));
  }
  return Object.fromEntries(names.map((name) => [name, out.get(name) ?? []])) as Record<
    K,
    number[]
  >;
}

/** A stream case's figures: MB/s (median and each run) and the reading process's page faults. */
interface StreamFigures {
  mbps: number;
  runs: number[];
  readerFaultsPerGiB: number;
}

/** Rates of each case, the cases taking turns run by run; MB/s, the median and all runs. */
async function interleavedStreams<K extends string>(
  cases: Record<K, (bytes: number) => Promise<number>>,
  bytes: number,
  runs: number,
  warmupBytes: number,
): Promise<Record<K, StreamFigures>> {
  const names = Object.keys(cases) as K[];
  for (const name of names) await cases[name](warmupBytes);
  const samples = new Map<K, number[]>(names.map((name) => [name, []]));
  const faults = new Map<K, number[]>(names.map((name) => [name, []]));
  for (let run = 0; run < runs; run++) {
    for (const name of names) {
      const before = process.resourceUsage().minorPageFault;
      samples.get(name)?.push(await cases[name](bytes));
      const taken = process.resourceUsage().minorPageFault - before;
      faults.get(name)?.push((taken * GiB) / bytes);
    }
  }
  return Object.fromEntries(
    names.map((name) => {
      const all = samples.get(name) ?? [];
      return [
        name,
        {
          mbps: median(all),
          runs: all.map((r) => round(r)),
          readerFaultsPerGiB: round(median(faults.get(name) ?? [])),
        },
      ];
    }),
  ) as Record<K, StreamFigures>;
}

function sizeLabel(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  return `${bytes / KiB} KiB`;
}

const us = (ms: number): number => ms * 1000;

function summaryFigures(s: Summary): Record<string, number> {
  return {
    n: s.n,
    minUs: round(us(s.min), 1),
    medianUs: round(us(s.median), 1),
    p90Us: round(us(s.p90), 1),
    p99Us: round(us(s.p99), 1),
    maxUs: round(us(s.max), 1),
  };
}

/** Round trips with the two processes placed one way (pinned with taskset), or left unpinned. */
interface Latency {
  key: "differentCpus" | "oneCpu" | "unpinned";
  label: string;
  raw: Summary;
  guestlink: Summary;
}

/**
 * Where to run the ends for the round trips: on two different CPUs and on one CPU, when taskset
 * can pin both processes (a wake-up across CPUs costs more, much more on some VMs, and with
 * neither pinned the scheduler picks one or the other), else unpinned.
 */
async function placements(
  helperPid: number,
): Promise<{ key: Latency["key"]; label: string; bench?: string; helper?: string }[]> {
  const unpinned = [{ key: "unpinned" as const, label: "1 in flight (unpinned)" }];
  const mine = await getAffinity(process.pid);
  const cpus = mine === undefined ? [] : parseCpuList(mine);
  const [a, b] = cpus;
  if (a === undefined || b === undefined || (await getAffinity(helperPid)) === undefined) {
    return unpinned;
  }
  return [
    { key: "differentCpus", label: "1 in flight, different CPUs", bench: `${a}`, helper: `${b}` },
    { key: "oneCpu", label: "1 in flight, one CPU", bench: `${a}`, helper: `${a}` },
  ];
}

interface Measured {
  latency: Latency[];
  rates: Record<"raw" | "guestlink" | "source", Rate>;
  stream: Record<"raw" | "guestlink", StreamFigures>;
  sweep: Record<string, StreamFigures>;
  buildWarnings: string;
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(os.tmpdir(), "guestlink-bench-"));
  const res = new Resources();
  res.add(() => rm(dir, { recursive: true, force: true }));
  try {
    const build = await buildLibrary(dir);
    const lib = await loadLib(build.dir);
    const rawPath = join(dir, "raw.sock");
    const glPath = join(dir, "gl.sock");
    const sourcePath = join(dir, "source.sock");
    // The sweep's servers, one per stream window; the default window is served at glPath.
    const sweepPaths = new Map(
      SWEEP_STREAM_WINDOWS.map((w) => [
        w,
        w === DEFAULT_STREAM_WINDOW_BYTES ? glPath : join(dir, `gl-${w}.sock`),
      ]),
    );
    const sweepServes = [...sweepPaths]
      .filter(([, path]) => path !== glPath)
      .map(([w, path]) => `guestlink:${path}:${w}:${w * SESSION_WINDOW_FACTOR}`);
    const helper = await res.helper([
      "--lib",
      build.dir,
      `raw:${rawPath}`,
      `guestlink:${glPath}`,
      `source:${sourcePath}`,
      ...sweepServes,
    ]);
    const session = await res.session(lib, glPath);

    // ---- one call in flight, per placement ----
    const rawEcho = new RawEchoClient(await res.raw(rawPath, RAW_ECHO));
    const glEcho = guestlinkEcho(session);
    const latency: Latency[] = [];
    const ourCpus = await getAffinity(process.pid);
    const helperCpus = await getAffinity(helper.pid);
    const unpin = async () => {
      if (ourCpus !== undefined) await setAffinity(process.pid, ourCpus);
      if (helperCpus !== undefined) await setAffinity(helper.pid, helperCpus);
    };
    res.add(unpin);
    for (const place of await placements(helper.pid)) {
      if (place.bench !== undefined && place.helper !== undefined) {
        const pinned =
          (await setAffinity(process.pid, place.bench)) &&
          (await setAffinity(helper.pid, place.helper));
        if (!pinned) throw new Error(`taskset could not pin the processes (${place.label})`);
      }
      const samples = await interleavedLatency(
        { raw: rawEcho.roundTrip, guestlink: glEcho },
        cfg.latencySamples,
        cfg.latencyWarmup,
      );
      latency.push({
        key: place.key,
        label: place.label,
        raw: summarize(samples.raw),
        guestlink: summarize(samples.guestlink),
      });
    }
    await unpin();

    // ---- 64 calls in flight ----
    const rawFramed = new RawFramedClient(await res.raw(rawPath, RAW_FRAMED));
    const sourceSession = await res.session(SOURCE_LIB, sourcePath);
    const rates = await measureRates(
      {
        raw: () => rawFramed.run(cfg.pipelineBatch, IN_FLIGHT),
        guestlink: () => guestlinkPipelined(session, cfg.pipelineBatch, IN_FLIGHT),
        source: () => guestlinkPipelined(sourceSession, cfg.pipelineBatch, IN_FLIGHT),
      },
      runOptions(opts),
    );

    // ---- one long stream ----
    const stream = await interleavedStreams(
      {
        raw: (bytes) => rawStream(rawPath, bytes),
        guestlink: (bytes) => guestlinkStream(lib, session, bytes),
      },
      cfg.streamBytes,
      cfg.streamRuns,
      cfg.warmupStreamBytes,
    );

    // ---- the stream-window sweep, the windows taking turns ----
    const sweepCases: Record<string, (bytes: number) => Promise<number>> = {
      raw: (bytes) => rawStream(rawPath, bytes),
    };
    for (const [window, path] of sweepPaths) {
      const s =
        path === glPath
          ? session
          : await res.session(lib, path, {
              streamWindowBytes: window,
              sessionWindowBytes: window * SESSION_WINDOW_FACTOR,
            });
      sweepCases[String(window)] = (bytes) => guestlinkStream(lib, s, bytes);
    }
    const sweep = await interleavedStreams(
      sweepCases,
      cfg.sweepBytes,
      cfg.sweepRuns,
      cfg.warmupStreamBytes,
    );

    return report(opts, cfg, {
      latency,
      rates,
      stream,
      sweep,
      buildWarnings: build.warnings,
    });
  } finally {
    await res.release();
  }
}

function report(opts: BenchOptions, cfg: Config, m: Measured): BenchReport {
  const o = runOptions(opts);
  const { latency, rates, stream, sweep } = m;
  const sourceRatio = rates.source.median / rates.guestlink.median;
  const callsRatio = rates.guestlink.median / rates.raw.median;
  const streamRatio = stream.guestlink.mbps / stream.raw.mbps;
  const callsVerdict = verdict(rates.guestlink.median, AIM_CALLS_PER_S);
  const streamVerdict = verdict(streamRatio, AIM_STREAM_RATIO);

  const latencyFigures: Record<string, unknown> = { payloadBytes: ECHO_PAYLOAD_BYTES };
  const rows: string[][] = [];
  let latencyPass = true;
  for (const l of latency) {
    const ratios = { median: l.guestlink.median / l.raw.median, p99: l.guestlink.p99 / l.raw.p99 };
    const verdicts = {
      median: verdict(ratios.median, AIM_LATENCY_RATIO, false),
      p99: verdict(ratios.p99, AIM_LATENCY_RATIO, false),
    };
    for (const stat of ["median", "p99"] as const) {
      rows.push([
        `${l.label}: round trip, ${stat}`,
        formatNumber(us(l.guestlink[stat]), 1),
        formatNumber(us(l.raw[stat]), 1),
        "us",
        formatNumber(ratios[stat], 2),
        `<= ${AIM_LATENCY_RATIO}x raw`,
        verdicts[stat],
      ]);
    }
    latencyPass &&= verdicts.median === "PASS" && verdicts.p99 === "PASS";
    latencyFigures[l.key] = {
      guestlink: summaryFigures(l.guestlink),
      raw: summaryFigures(l.raw),
      ratioMedian: round(ratios.median, 3),
      ratioP99: round(ratios.p99, 3),
    };
  }
  Object.assign(latencyFigures, { aimRatio: AIM_LATENCY_RATIO, pass: latencyPass });
  rows.push(
    [
      `${IN_FLIGHT} in flight: calls`,
      formatNumber(rates.guestlink.median),
      formatNumber(rates.raw.median),
      "calls/s",
      formatNumber(callsRatio, 2),
      `>= ${formatNumber(AIM_CALLS_PER_S)}/s`,
      callsVerdict,
    ],
    [
      `${IN_FLIGHT} in flight: calls, source under tsx`,
      formatNumber(rates.source.median),
      formatNumber(rates.raw.median),
      "calls/s",
      formatNumber(rates.source.median / rates.raw.median, 2),
      "",
      "(info)",
    ],
    [
      `1 stream of ${sizeLabel(cfg.streamBytes)}`,
      formatNumber(stream.guestlink.mbps),
      formatNumber(stream.raw.mbps),
      "MB/s",
      formatNumber(streamRatio, 2),
      `>= ${AIM_STREAM_RATIO}x raw`,
      streamVerdict,
    ],
  );

  const sweepRaw = sweep.raw?.mbps ?? Number.NaN;
  const sweepRates = SWEEP_STREAM_WINDOWS.map((w) => ({
    window: w,
    mbps: sweep[String(w)]?.mbps ?? Number.NaN,
    runs: sweep[String(w)]?.runs ?? [],
  }));
  const best = Math.max(...sweepRates.map((r) => r.mbps));
  // The smallest window within the tolerance of the best: memory per stream is the window.
  const enough = sweepRates.find((r) => r.mbps >= best * (1 - SWEEP_TOLERANCE));
  const defaultRate = sweepRates.find((r) => r.window === DEFAULT_STREAM_WINDOW_BYTES);
  const sweepRows = [
    ["raw socket (baseline)", "", formatNumber(sweepRaw), "1.00", sweep.raw?.runs.join(" ") ?? ""],
    ...sweepRates.map((r) => [
      `stream window ${sizeLabel(r.window)}${r.window === DEFAULT_STREAM_WINDOW_BYTES ? " (default)" : ""}`,
      sizeLabel(r.window * SESSION_WINDOW_FACTOR),
      formatNumber(r.mbps),
      formatNumber(r.mbps / sweepRaw, 2),
      r.runs.join(" "),
    ]),
  ];
  let conclusion: string;
  if (enough === undefined || defaultRate === undefined) {
    conclusion = "the sweep did not produce comparable figures";
  } else if (enough.window === DEFAULT_STREAM_WINDOW_BYTES) {
    conclusion = `the default stream window (${sizeLabel(DEFAULT_STREAM_WINDOW_BYTES)}) is the smallest within ${SWEEP_TOLERANCE * 100}% of the best rate: these figures support it`;
  } else if (enough.window < DEFAULT_STREAM_WINDOW_BYTES) {
    conclusion = `${sizeLabel(enough.window)} is already within ${SWEEP_TOLERANCE * 100}% of the best rate: a smaller default would do (the default ${sizeLabel(DEFAULT_STREAM_WINDOW_BYTES)} reached ${formatNumber(defaultRate.mbps)} MB/s with ${formatNumber(DEFAULT_STREAM_WINDOW_BYTES / enough.window)}x the memory per stream)`;
  } else {
    conclusion = `the default ${sizeLabel(DEFAULT_STREAM_WINDOW_BYTES)} is ${formatNumber((1 - defaultRate.mbps / best) * 100)}% below the best rate; ${sizeLabel(enough.window)} is the smallest window within ${SWEEP_TOLERANCE * 100}% of it: these figures support a larger default`;
  }

  const callWire =
    HEADER_BYTES +
    encodeControl({ method: "echo", params: echoPayload(), timeoutMs: 120000 }).length;
  const resultWire = HEADER_BYTES + encodeControl({ value: echoPayload() }).length;
  const text = [
    "session: guestlink over a Unix socket against bare net.Socket baselines; one helper process" +
      ` serves both${opts.quick ? "; QUICK: rough figures" : ""}`,
    "",
    table(["figure", "guestlink", "baseline", "unit", "ratio", "aim", "verdict"], rows),
    "",
    "guestlink is the tsc build of src/ (as shipped), at both ends; the far end is a separate process",
    "serving the baseline too, so both see the same process and CPU placement. For the round trips",
    "both processes are pinned with taskset (when it works) to two CPUs, then to one: a wake-up across",
    "CPUs costs more (much more on some VMs), and unpinned the scheduler switches between the two.",
    `1 in flight: ${formatNumber(cfg.latencySamples)} round trips per side and placement, taking turns in blocks of ${LATENCY_BLOCK};` +
      ` echo of ${ECHO_PAYLOAD_BYTES} payload bytes (on the wire: CALL ${callWire} B, RESULT` +
      ` ${resultWire} B; the baseline writes ${ECHO_PAYLOAD_BYTES} bytes and waits for them back).`,
    `${IN_FLIGHT} in flight: median of ${o.runs} runs of >= ${o.minMs} ms, batches of ${formatNumber(cfg.pipelineBatch)} calls` +
      ` (spread guestlink ${formatNumber(rates.guestlink.spread * 100)}%, raw ${formatNumber(rates.raw.spread * 100)}%);` +
      " the baseline frames each message with a 4-byte length and answers each read in one write.",
    `"source under tsx" is the TypeScript source as tsx runs it (tests, this harness):` +
      ` ${formatNumber(sourceRatio, 2)}x the build's rate; tsx's keepNames wraps each named closure.`,
    `stream: median of ${cfg.streamRuns} transfers per side (MB/s guestlink ${stream.guestlink.runs.join(" ")};` +
      ` raw ${stream.raw.runs.join(" ")}); 64 KiB writes with backpressure, read with for-await` +
      " (guestlink through toDuplex). MB = 10^6 bytes. The reader's page faults per GiB, median:" +
      ` guestlink ${formatNumber(stream.guestlink.readerFaultsPerGiB)}, raw ${formatNumber(stream.raw.readerFaultsPerGiB)}` +
      " (memory given back to the system and faulted in again: the raw reader's swing with glibc's state, and its rate with them;" +
      ` guestlink's read slabs ${slabAddonPath() !== undefined ? "come from its slab addon, used again once collected (src/platform/slabs.ts)" : "are Node's own: the slab addon is not built or turned off"}).`,
    ...(m.buildWarnings
      ? [
          `note: tsc reported errors building src/ (figures are from what it emitted):\n${m.buildWarnings}`,
        ]
      : []),
    "",
    `stream-window sweep: ${sizeLabel(cfg.sweepBytes)} per transfer, median of ${cfg.sweepRuns}, the cases taking turns`,
    "",
    table(["case", "session window", "MB/s", "x raw", "runs (MB/s)"], sweepRows),
    "",
    `sweep: ${conclusion}.`,
  ].join("\n");

  const figures: Record<string, unknown> = {
    build: m.buildWarnings ? "tsc reported errors" : "clean",
    latency: latencyFigures,
    pipelined: {
      inFlight: IN_FLIGHT,
      callsPerSecond: round(rates.guestlink.median),
      rawPerSecond: round(rates.raw.median),
      sourceUnderTsxPerSecond: round(rates.source.median),
      ratio: round(callsRatio, 3),
      spread: round(rates.guestlink.spread, 3),
      rawSpread: round(rates.raw.spread, 3),
      aimCallsPerSecond: AIM_CALLS_PER_S,
      pass: callsVerdict === "PASS",
    },
    stream: {
      bytes: cfg.streamBytes,
      mbps: round(stream.guestlink.mbps),
      rawMbps: round(stream.raw.mbps),
      ratio: round(streamRatio, 3),
      runs: stream.guestlink.runs,
      rawRuns: stream.raw.runs,
      readerFaultsPerGiB: stream.guestlink.readerFaultsPerGiB,
      rawReaderFaultsPerGiB: stream.raw.readerFaultsPerGiB,
      aimRatio: AIM_STREAM_RATIO,
      pass: streamVerdict === "PASS",
    },
    windowSweep: {
      bytes: cfg.sweepBytes,
      sessionWindowFactor: SESSION_WINDOW_FACTOR,
      rawMbps: round(sweepRaw),
      byStreamWindow: Object.fromEntries(sweepRates.map((r) => [String(r.window), round(r.mbps)])),
      smallestWithinTolerance: enough?.window ?? null,
      defaultStreamWindow: DEFAULT_STREAM_WINDOW_BYTES,
    },
  };
  return { text, figures };
}
