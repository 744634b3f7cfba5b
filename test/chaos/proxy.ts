/**
 * The chaos suite's fault-injecting proxy: it sits between a client and a target on a Unix socket
 * or loopback TCP and cuts, corrupts, delays, stalls, splits and truncates the bytes it forwards.
 *
 * Every byte-positioned fault (cut, garbage, stall, truncate) is scheduled on the count of original
 * bytes in one direction of one connection, from a stream derived from the seed, so the same seed
 * and the same input give the same faults at the same offsets however the kernel chunks the data.
 * Only the per-chunk delays depend on chunking. Print the seed with any failure and it replays.
 *
 * Forwarding reads a chunk only after the previous one is written and drained, so the proxy holds
 * at most one chunk per direction plus the sockets' own buffers: it never buffers unboundedly.
 */
import net from "node:net";
import { formatAddress } from "../../src/transport/address.ts";
import {
  Connection,
  type ConnectionHost,
  DEFAULT_TCP_HOST,
  DIRECTION_INDEX,
  type ResolvedFaults,
} from "./connection.ts";
import { GARBAGE_KINDS, type GarbageKind } from "./garbage.ts";

export type { GarbageKind } from "./garbage.ts";

/** A Unix socket path, or a TCP host and port (host defaults to 127.0.0.1; port 0 picks one). */
export type ChaosEndpoint = { path: string } | { host?: string; port: number };

/** One direction of a proxied connection. */
export type ChaosDirection = "to-target" | "to-client";

export interface ChaosFaultOptions {
  /** Cut the connection (destroy both sides) after about this many bytes, jittered ±50%. */
  cutEveryBytes?: number;
  /** Insert a garbage burst after about this many bytes, jittered ±50%. */
  garbageEveryBytes?: number;
  /** The kinds of burst to draw from; all of them by default. */
  garbage?: readonly GarbageKind[];
  /** Delay each chunk by up to this many milliseconds, keeping order. */
  delayMs?: number;
  /** Stop forwarding for `stallMs` after about this many bytes, jittered ±50%. */
  stallEveryBytes?: number;
  stallMs?: number;
  /** Write each chunk in pieces of at most this many bytes, one event-loop turn apart. */
  splitWrites?: number;
  /** Forward only this many bytes, then swallow the rest (end included) but keep the connection. */
  truncateAfterBytes?: number;
}

export interface ChaosProxyOptions {
  listen: ChaosEndpoint;
  target: ChaosEndpoint;
  seed: number;
  faults?: ChaosFaultOptions;
  /** Which directions the faults apply to; freeze and cutAll always apply to both. */
  direction?: "both" | ChaosDirection;
  /** Told of every fault as it is injected, in order. */
  onFault?: (fault: ChaosFault) => void;
  /**
   * Told of the original bytes (garbage not included) as they are forwarded, in order, before
   * any fault that follows them is reported: so a test can tell where in the stream each fault
   * landed (test/chaos/frames.ts: between frames, in a header, inside a payload).
   */
  onForward?: (at: ForwardAt, bytes: Uint8Array) => void;
}

/** Which stream some forwarded bytes belong to. */
export type ForwardAt = Omit<FaultAt, "atByte">;

export interface FaultAt {
  /** Accept order of the connection, from 0. */
  connection: number;
  direction: ChaosDirection;
  /** Original bytes forwarded in this direction before the fault. */
  atByte: number;
}

export type ChaosFault =
  | (FaultAt & {
      kind: "garbage";
      garbage: GarbageKind;
      /** Where the burst starts in what the receiver sees (original bytes plus earlier bursts). */
      outByte: number;
      bytes: Uint8Array;
    })
  | (FaultAt & { kind: "stall"; ms: number })
  | (FaultAt & { kind: "truncate" })
  /** The source of a truncated direction ended; the end was not forwarded. */
  | (FaultAt & { kind: "swallow-end"; droppedBytes: number })
  /** A direction had bytes to write and held them because the proxy is frozen. */
  | (FaultAt & { kind: "freeze" })
  | (FaultAt & { kind: "cut"; cause: "schedule" })
  /** `atByte` is the original bytes forwarded in both directions together. */
  | (Omit<FaultAt, "direction"> & { kind: "cut"; cause: "cutAll"; direction: "both" });

export interface ChaosStats {
  /** Connections accepted since the start. */
  connections: number;
  /** Connections still open. */
  open: number;
  /** Original bytes forwarded (garbage not included). */
  bytesForwarded: { toTarget: number; toClient: number };
  /** Bytes swallowed after a truncation. */
  bytesDropped: { toTarget: number; toClient: number };
  /** Separate writes to the destination sockets. */
  writes: { toTarget: number; toClient: number };
  /** The most bytes ever queued in a destination socket: stays near one chunk, as backpressure holds. */
  peakQueuedBytes: number;
  /** Injected cuts, scheduled or by `cutAll()`. */
  cuts: number;
  garbageBursts: number;
  garbageBytes: number;
  stalls: number;
  delays: number;
  truncations: number;
  targetConnectFailures: number;
}

export interface ChaosProxy {
  /** Where to connect, in guestlink's syntax: `unix:PATH` or `tcp:127.0.0.1:PORT`. */
  readonly address: string;
  readonly seed: number;
  /** A snapshot of the counters. */
  readonly stats: ChaosStats;
  /** Cuts every live connection now; returns how many. */
  cutAll(): number;
  /** Stops forwarding in every direction of every connection; sources are no longer read. */
  freeze(): void;
  /** Resumes forwarding after `freeze()`. */
  thaw(): void;
  /** Stops listening, destroys every connection and clears every timer. */
  close(): Promise<void>;
}

const DEFAULT_STALL_MS = 100;
const MAX_TCP_PORT = 65535;

function describeEndpoint(e: ChaosEndpoint): string {
  return "path" in e ? `unix:${e.path}` : `tcp:${e.host ?? DEFAULT_TCP_HOST}:${e.port}`;
}

function resolveOptions(options: ChaosProxyOptions): ResolvedFaults {
  const seed = options.seed;
  const fail = (problem: string) => new Error(`chaos proxy (seed ${seed}): ${problem}`);
  if (!Number.isSafeInteger(seed)) throw fail("seed must be an integer");
  const checkEndpoint = (name: string, e: ChaosEndpoint | undefined, portFloor: number) => {
    if (e === undefined || typeof e !== "object")
      throw fail(`${name} must be {path} or {host, port}`);
    if ("path" in e) {
      if (typeof e.path !== "string" || e.path.length === 0) {
        throw fail(`${name}.path must be a non-empty string`);
      }
    } else if (!Number.isInteger(e.port) || e.port < portFloor || e.port > MAX_TCP_PORT) {
      throw fail(`${name}.port must be an integer from ${portFloor} to ${MAX_TCP_PORT}`);
    }
  };
  checkEndpoint("listen", options.listen, 0);
  checkEndpoint("target", options.target, 1);
  const direction = options.direction ?? "both";
  if (direction !== "both" && !(direction in DIRECTION_INDEX)) {
    throw fail(`direction must be "both", "to-target" or "to-client", not ${String(direction)}`);
  }
  const f = options.faults ?? {};
  const count = (name: keyof ChaosFaultOptions, min: number): number => {
    const value = f[name];
    if (value === undefined) return 0;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      throw fail(`faults.${name} must be an integer of at least ${min}, not ${String(value)}`);
    }
    return value;
  };
  const garbage = f.garbage ?? GARBAGE_KINDS;
  if (garbage.length === 0 || garbage.some((k) => !GARBAGE_KINDS.includes(k))) {
    throw fail(`faults.garbage must list some of ${GARBAGE_KINDS.join(", ")}`);
  }
  const truncate = f.truncateAfterBytes === undefined ? -1 : count("truncateAfterBytes", 0);
  return {
    cutEveryBytes: count("cutEveryBytes", 1),
    garbageEveryBytes: count("garbageEveryBytes", 1),
    garbage,
    delayMs: count("delayMs", 0),
    stallEveryBytes: count("stallEveryBytes", 1),
    stallMs: f.stallMs === undefined ? DEFAULT_STALL_MS : count("stallMs", 0),
    splitWrites: count("splitWrites", 1),
    truncateAfterBytes: truncate,
  };
}

function emptyStats(): ChaosStats {
  return {
    connections: 0,
    open: 0,
    bytesForwarded: { toTarget: 0, toClient: 0 },
    bytesDropped: { toTarget: 0, toClient: 0 },
    writes: { toTarget: 0, toClient: 0 },
    peakQueuedBytes: 0,
    cuts: 0,
    garbageBursts: 0,
    garbageBytes: 0,
    stalls: 0,
    delays: 0,
    truncations: 0,
    targetConnectFailures: 0,
  };
}

/** Starts the proxy; rejects (naming the seed) if it cannot listen. */
export async function startChaosProxy(options: ChaosProxyOptions): Promise<ChaosProxy> {
  const faults = resolveOptions(options);
  const proxy = new ProxyServer(options, faults);
  await proxy.listen();
  return proxy;
}

class ProxyServer implements ChaosProxy, ConnectionHost {
  readonly seed: number;
  readonly counters = emptyStats();
  readonly live = new Set<Connection>();
  readonly thawWaiters = new Set<() => void>();
  frozen = false;
  private readonly server: net.Server;
  private nextConnection = 0;
  private closing: Promise<void> | undefined;
  private listenAddress = "";

  constructor(
    readonly options: ChaosProxyOptions,
    readonly faults: ResolvedFaults,
  ) {
    this.seed = options.seed;
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
  }

  get address(): string {
    return this.listenAddress;
  }

  get stats(): ChaosStats {
    const c = this.counters;
    return {
      ...c,
      open: this.live.size,
      bytesForwarded: { ...c.bytesForwarded },
      bytesDropped: { ...c.bytesDropped },
      writes: { ...c.writes },
    };
  }

  async listen(): Promise<void> {
    const listen = this.options.listen;
    const server = this.server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        const done = () => {
          server.off("error", reject);
          resolve();
        };
        if ("path" in listen) server.listen(listen.path, done);
        else server.listen(listen.port, listen.host ?? DEFAULT_TCP_HOST, done);
      });
    } catch (err) {
      throw new Error(
        `chaos proxy (seed ${this.seed}): cannot listen on ${describeEndpoint(listen)}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    // Later server errors have no caller to reach; connections fail on their own.
    server.on("error", () => {});
    if ("path" in listen) {
      this.listenAddress = formatAddress({ kind: "unix", path: listen.path });
    } else {
      const bound = server.address() as net.AddressInfo;
      const host = listen.host ?? DEFAULT_TCP_HOST;
      this.listenAddress = formatAddress({ kind: "tcp", host, port: bound.port });
    }
  }

  report(fault: ChaosFault): void {
    const onFault = this.options.onFault;
    if (onFault !== undefined) this.tell(() => onFault(fault));
  }

  forwarded(at: ForwardAt, bytes: Uint8Array): void {
    const onForward = this.options.onForward;
    if (onForward !== undefined) this.tell(() => onForward(at, bytes));
  }

  private tell(callback: () => void): void {
    try {
      callback();
    } catch (err) {
      // A failing callback is usually a failing assertion: surface it, never swallow it.
      process.nextTick(() => {
        throw err;
      });
    }
  }

  private accept(client: net.Socket): void {
    if (this.closing) {
      client.destroy();
      return;
    }
    this.counters.connections++;
    const conn = new Connection(this, this.nextConnection++, client);
    this.live.add(conn);
    conn.connect(this.options.target);
  }

  /** Fault settings for one direction, or undefined when faults do not apply to it. */
  faultsFor(direction: ChaosDirection): ResolvedFaults | undefined {
    const applies = this.options.direction ?? "both";
    return applies === "both" || applies === direction ? this.faults : undefined;
  }

  cutAll(): number {
    const conns = [...this.live];
    for (const conn of conns) {
      this.counters.cuts++;
      this.report({
        kind: "cut",
        cause: "cutAll",
        connection: conn.id,
        direction: "both",
        atByte: conn.bytesIn(),
      });
      conn.kill();
    }
    return conns.length;
  }

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    for (const wake of [...this.thawWaiters]) wake();
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.frozen = false;
      for (const conn of [...this.live]) conn.kill();
      for (const wake of [...this.thawWaiters]) wake();
    });
    return this.closing;
  }
}
