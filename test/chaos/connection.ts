/**
 * One proxied connection of the chaos proxy (proxy.ts): the accepted client, its connection to the
 * target, and a pipe per direction that reads, injects the scheduled faults and writes.
 */
import { createConnection, type Socket } from "node:net";
import { type GarbageKind, makeGarbage } from "./garbage.ts";
import { deriveRandom, jitter, type Random, randomInt } from "./prng.ts";
import type {
  ChaosDirection,
  ChaosEndpoint,
  ChaosFault,
  ChaosStats,
  FaultAt,
  ForwardAt,
} from "./proxy.ts";

export const DEFAULT_TCP_HOST = "127.0.0.1";

/** Fault options filled in; 0 (or -1 for truncateAfterBytes) means off. */
export interface ResolvedFaults {
  cutEveryBytes: number;
  garbageEveryBytes: number;
  garbage: readonly GarbageKind[];
  delayMs: number;
  stallEveryBytes: number;
  stallMs: number;
  splitWrites: number;
  truncateAfterBytes: number;
}

/** Each purpose draws from its own stream so that turning one fault on never moves another. */
const Purpose = { CUT: 1, GARBAGE: 2, STALL: 3, DELAY: 4 } as const;
export const DIRECTION_INDEX: Record<ChaosDirection, number> = { "to-target": 0, "to-client": 1 };

/** What a connection needs from the proxy that accepted it. */
export interface ConnectionHost {
  readonly seed: number;
  readonly counters: ChaosStats;
  readonly live: Set<Connection>;
  readonly thawWaiters: Set<() => void>;
  readonly frozen: boolean;
  report(fault: ChaosFault): void;
  forwarded(at: ForwardAt, bytes: Uint8Array): void;
  faultsFor(direction: ChaosDirection): ResolvedFaults | undefined;
}

/** One accepted client and its connection to the target. */
export class Connection {
  /** Set once either side is destroyed or both have closed; every wait then returns at once. */
  dead = false;
  private target: Socket | undefined;
  private readonly pipes: Pipe[] = [];
  private readonly wakers = new Set<() => void>();
  private closedSockets = 0;

  constructor(
    readonly proxy: ConnectionHost,
    readonly id: number,
    private readonly client: Socket,
  ) {
    client.on("error", () => this.kill());
    client.on("close", () => this.socketClosed());
  }

  connect(endpoint: ChaosEndpoint): void {
    const target =
      "path" in endpoint
        ? createConnection({ path: endpoint.path, allowHalfOpen: true })
        : createConnection({
            host: endpoint.host ?? DEFAULT_TCP_HOST,
            port: endpoint.port,
            allowHalfOpen: true,
            noDelay: true,
          });
    this.target = target;
    let connected = false;
    target.on("error", () => {
      if (!connected) this.proxy.counters.targetConnectFailures++;
      this.kill();
    });
    target.on("close", () => this.socketClosed());
    target.once("connect", () => {
      connected = true;
      if (this.dead) return;
      // Forward small writes as they come; only splitWrites decides how bytes are grouped.
      this.client.setNoDelay(true);
      this.pipes.push(
        new Pipe(this, "to-target", this.client, target),
        new Pipe(this, "to-client", target, this.client),
      );
      for (const pipe of this.pipes) void pipe.run();
    });
  }

  bytesIn(): number {
    return this.pipes.reduce((n, p) => n + p.inBytes, 0);
  }

  /** Destroys both sides at once: a cut, an error on either side, or the proxy closing. */
  kill(): void {
    if (this.dead) return;
    this.client.destroy();
    this.target?.destroy();
    this.finish();
  }

  private socketClosed(): void {
    // Both sides closed on their own: every end was forwarded and flushed, nothing to destroy.
    if (++this.closedSockets === 2) this.finish();
  }

  private finish(): void {
    this.dead = true;
    this.proxy.live.delete(this);
    for (const wake of [...this.wakers]) wake();
  }

  /**
   * Waits until `arm`'s trigger fires or the connection dies. `arm` returns its disarm function;
   * waiters are removed when they fire, so long connections accumulate no listeners.
   */
  park(arm: (wake: () => void) => () => void): Promise<void> {
    if (this.dead) return Promise.resolve();
    return new Promise((resolve) => {
      let disarm: (() => void) | undefined;
      const wake = () => {
        if (!this.wakers.delete(wake)) return;
        disarm?.();
        resolve();
      };
      this.wakers.add(wake);
      disarm = arm(wake);
      if (!this.wakers.has(wake)) disarm();
    });
  }

  sleep(ms: number): Promise<void> {
    return this.park((wake) => {
      const timer = setTimeout(wake, ms);
      timer.unref();
      return () => clearTimeout(timer);
    });
  }

  nextTurn(): Promise<void> {
    return this.park((wake) => {
      const immediate = setImmediate(wake);
      immediate.unref();
      return () => clearImmediate(immediate);
    });
  }

  drained(socket: Socket): Promise<void> {
    return this.park((wake) => {
      socket.on("drain", wake);
      socket.on("close", wake);
      return () => {
        socket.off("drain", wake);
        socket.off("close", wake);
      };
    });
  }

  thawed(): Promise<void> {
    const waiters = this.proxy.thawWaiters;
    return this.park((wake) => {
      waiters.add(wake);
      return () => waiters.delete(wake);
    });
  }
}

/** One direction of a connection: reads the source, injects faults, writes the destination. */
class Pipe {
  /** Original bytes taken from the source (forwarded, or dropped after a truncation). */
  inBytes = 0;
  /** Bytes written to the destination, garbage included. */
  private outBytes = 0;
  private truncated = false;
  private dropped = 0;
  private readonly key: "toTarget" | "toClient";
  private readonly faults: ResolvedFaults | undefined;
  private nextCut = Number.POSITIVE_INFINITY;
  private nextGarbage = Number.POSITIVE_INFINITY;
  private nextStall = Number.POSITIVE_INFINITY;
  private truncateAt = Number.POSITIVE_INFINITY;
  private readonly cutRandom: Random;
  private readonly garbageRandom: Random;
  private readonly stallRandom: Random;
  private readonly delayRandom: Random;

  constructor(
    private readonly conn: Connection,
    private readonly direction: ChaosDirection,
    private readonly src: Socket,
    private readonly dst: Socket,
  ) {
    this.key = direction === "to-target" ? "toTarget" : "toClient";
    const seed = conn.proxy.seed;
    const d = DIRECTION_INDEX[direction];
    this.cutRandom = deriveRandom(seed, conn.id, d, Purpose.CUT);
    this.garbageRandom = deriveRandom(seed, conn.id, d, Purpose.GARBAGE);
    this.stallRandom = deriveRandom(seed, conn.id, d, Purpose.STALL);
    this.delayRandom = deriveRandom(seed, conn.id, d, Purpose.DELAY);
    const f = conn.proxy.faultsFor(direction);
    this.faults = f;
    if (f === undefined) return;
    if (f.cutEveryBytes > 0) this.nextCut = jitter(this.cutRandom, f.cutEveryBytes);
    if (f.garbageEveryBytes > 0) this.nextGarbage = jitter(this.garbageRandom, f.garbageEveryBytes);
    if (f.stallEveryBytes > 0) this.nextStall = jitter(this.stallRandom, f.stallEveryBytes);
    if (f.truncateAfterBytes >= 0) this.truncateAt = f.truncateAfterBytes;
  }

  private at(): FaultAt {
    return { connection: this.conn.id, direction: this.direction, atByte: this.inBytes };
  }

  async run(): Promise<void> {
    try {
      // The iterator reads the next chunk only when asked: that is the backpressure. It must not
      // destroy the socket at the end of its readable half: the other half may still be writing.
      for await (const chunk of this.src.iterator({ destroyOnReturn: false })) {
        await this.forward(chunk as Buffer);
        if (this.conn.dead) return;
      }
    } catch {
      // The source failed (reset, or destroyed by a cut): the whole connection goes.
      this.conn.kill();
      return;
    }
    if (this.conn.dead) return;
    if (!this.truncated && this.inBytes >= this.truncateAt) this.truncate();
    if (this.truncated) {
      this.conn.proxy.report({ ...this.at(), kind: "swallow-end", droppedBytes: this.dropped });
      return;
    }
    await this.holdWhileFrozen();
    // Half-close: end() flushes what is queued, then sends the end on.
    if (!this.conn.dead) this.dst.end();
  }

  private async forward(chunk: Uint8Array): Promise<void> {
    const f = this.faults;
    const stats = this.conn.proxy.counters;
    if (f !== undefined && f.delayMs > 0 && !this.truncated) {
      const ms = randomInt(this.delayRandom, 0, f.delayMs);
      stats.delays++;
      if (ms > 0) await this.conn.sleep(ms);
    }
    let off = 0;
    while (off < chunk.length && !this.conn.dead) {
      if (this.truncated) {
        const rest = chunk.length - off;
        this.dropped += rest;
        this.inBytes += rest;
        stats.bytesDropped[this.key] += rest;
        return;
      }
      const next = Math.min(this.nextCut, this.nextGarbage, this.nextStall, this.truncateAt);
      if (this.inBytes < next) {
        const take = Math.min(chunk.length - off, next - this.inBytes);
        const piece = chunk.subarray(off, off + take);
        off += take;
        this.inBytes += take;
        stats.bytesForwarded[this.key] += take;
        this.conn.proxy.forwarded({ connection: this.conn.id, direction: this.direction }, piece);
        await this.write(piece);
      } else {
        await this.fault();
      }
    }
  }

  /** Injects the fault due at the current position; several due together go in this order. */
  private async fault(): Promise<void> {
    const f = this.faults as ResolvedFaults;
    const proxy = this.conn.proxy;
    const stats = proxy.counters;
    const at = this.inBytes;
    if (at === this.truncateAt) {
      this.truncate();
    } else if (at === this.nextCut) {
      stats.cuts++;
      proxy.report({ ...this.at(), kind: "cut", cause: "schedule" });
      this.conn.kill();
    } else if (at === this.nextGarbage) {
      const r = this.garbageRandom;
      this.nextGarbage = at + jitter(r, f.garbageEveryBytes);
      const kind = f.garbage[randomInt(r, 0, f.garbage.length - 1)] as GarbageKind;
      const bytes = makeGarbage(kind, r);
      stats.garbageBursts++;
      stats.garbageBytes += bytes.length;
      proxy.report({ ...this.at(), kind: "garbage", garbage: kind, outByte: this.outBytes, bytes });
      await this.write(bytes);
    } else if (at === this.nextStall) {
      this.nextStall = at + jitter(this.stallRandom, f.stallEveryBytes);
      stats.stalls++;
      proxy.report({ ...this.at(), kind: "stall", ms: f.stallMs });
      await this.conn.sleep(f.stallMs);
    }
  }

  private truncate(): void {
    this.truncated = true;
    this.conn.proxy.counters.truncations++;
    this.conn.proxy.report({ ...this.at(), kind: "truncate" });
  }

  private async write(bytes: Uint8Array): Promise<void> {
    const split = this.faults?.splitWrites ?? 0;
    if (split === 0) {
      await this.writeOnce(bytes);
      return;
    }
    for (let at = 0; at < bytes.length && !this.conn.dead; at += split) {
      await this.writeOnce(bytes.subarray(at, at + split));
      // A turn of the event loop between pieces, so each leaves in its own write and the reader
      // gets a chance to see it alone (the kernel may still merge them; nothing can forbid that).
      await this.conn.nextTurn();
    }
  }

  private async writeOnce(bytes: Uint8Array): Promise<void> {
    if (this.conn.proxy.frozen) await this.holdWhileFrozen();
    if (this.conn.dead) return;
    this.outBytes += bytes.length;
    const stats = this.conn.proxy.counters;
    stats.writes[this.key]++;
    const more = this.dst.write(bytes);
    stats.peakQueuedBytes = Math.max(stats.peakQueuedBytes, this.dst.writableLength);
    if (!more) await this.conn.drained(this.dst);
  }

  private async holdWhileFrozen(): Promise<void> {
    let reported = false;
    while (this.conn.proxy.frozen && !this.conn.dead) {
      if (!reported) {
        reported = true;
        this.conn.proxy.report({ ...this.at(), kind: "freeze" });
      }
      await this.conn.thawed();
    }
  }
}
