/**
 * The mediator (issue 17): guests submit work to the host's priority pools over any guestlink
 * address, the scheduler queues it by pool, level and guest (scheduler.ts), the pool's workers
 * run it (workers.ts), and the reply goes back on the guest's session — which keeps it across a
 * dropped connection; a key keeps it across a new session. Each listen address is one guest's
 * channel (one flow); a pattern with `*` is one channel per match, picked up live; a `shared`
 * address splits its flows by the identity each peer gave in its handshake.
 */
import { mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import * as v from "valibot";
import { ConfigInvalidError, InvalidOptionError } from "../../errors.ts";
import { readKeyFile } from "../../platform/key-file.ts";
import { nodeClock } from "../../platform/node.ts";
import { type SessionServer, serveSessions } from "../../platform/session.ts";
import type { CallContext } from "../../session/call.ts";
import type { Clock } from "../../session/runtime.ts";
import type { Session } from "../../session/session.ts";
import { parseAddress } from "../../transport/address.ts";
import { VERSION } from "../../version.ts";
import { Discovery } from "../discover.ts";
import type { ListenEntry, MediatorConfig } from "./config.ts";
import { MEDIATOR_SERVICE, STATUS_METHOD, SUBMIT_METHOD } from "./contract.ts";
import { type RunContext, Scheduler, type SchedulerStatus } from "./scheduler.ts";
import { functionWorker, type PoolWorker, startWorker } from "./workers.ts";

/** The methods a mediator serves. */
/** How long a guest's session may take to close when the mediator stops. */
const CLOSE_GRACE_MS = 2_000;
/** Longest key a guest may give. */
export const MAX_KEY_LENGTH = 256;

export type MediatorLog = (
  level: "info" | "warn",
  message: string,
  fields?: Record<string, unknown>,
) => void;

/** A pool's work done in this process: the request's input in, its result out. */
export type WorkerFunction = (input: unknown, ctx: RunContext) => unknown;

export interface MediatorOptions {
  log?: MediatorLog;
  /**
   * Pools whose work a function of this program does, by pool name, instead of the config's
   * `worker:` (a pool needs one or the other). A throw or rejection is the guest's WORKER_FAILED.
   */
  workers?: Record<string, WorkerFunction>;
  clock?: Clock;
  /** How often a pattern's folders are looked for. Default 500 ms. */
  discoverPollMs?: number;
}

export interface ChannelStatus {
  address: string;
  /** The guest this channel is; null for a shared one (its peers are the guests). */
  guest: string | null;
  shared: boolean;
  sessions: number;
}

export interface MediatorStatus extends SchedulerStatus {
  channels: ChannelStatus[];
}

/** What a guest submits (`mediator.submit`). */
const SubmitParams = v.strictObject({
  pool: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  priority: v.optional(v.pipe(v.number(), v.integer())),
  input: v.optional(v.unknown()),
  key: v.optional(
    v.pipe(
      v.string(),
      v.minLength(1),
      v.maxLength(MAX_KEY_LENGTH),
      v.check((k) => !k.includes("\0"), "a key must not contain NUL"),
    ),
  ),
});
export type SubmitParams = v.InferOutput<typeof SubmitParams>;

interface Channel {
  entry: ListenEntry;
  /** The flow of a dedicated channel; a shared one's come from its peers. */
  guest: string | undefined;
  server: SessionServer;
}

export class Mediator {
  readonly config: MediatorConfig;
  readonly #log: MediatorLog;
  readonly #scheduler: Scheduler;
  readonly #workers = new Map<string, PoolWorker>();
  /** By the concrete address listened on. */
  readonly #channels = new Map<string, Channel>();
  readonly #discoveries: Discovery[] = [];
  readonly #pollMs: number;
  #closing: Promise<void> | undefined;

  private constructor(config: MediatorConfig, options: MediatorOptions) {
    this.config = config;
    this.#log = options.log ?? (() => {});
    this.#pollMs = options.discoverPollMs ?? 500;
    // Every pool has a worker before any is started.
    config.pools.forEach((pool, i) => {
      if (options.workers?.[pool.name] === undefined && pool.worker === undefined) {
        throw new ConfigInvalidError(
          `pools[${i}].worker: required, but missing (give the pool a helper: or command:, or a worker function in Mediator.start's options)`,
        );
      }
    });
    for (const pool of config.pools) {
      const fn = options.workers?.[pool.name];
      this.#workers.set(
        pool.name,
        fn !== undefined
          ? functionWorker(pool.name, fn)
          : startWorker(pool, (message, fields) => this.#log("info", message, fields)),
      );
    }
    this.#scheduler = new Scheduler({
      clock: options.clock ?? nodeClock,
      keepMs: config.results.keepMs,
      maxKept: config.results.max,
      maxKeptPerGuest: config.results.guestMax,
      pools: config.pools.map((p) => ({
        name: p.name,
        slots: p.slots,
        weights: p.weights,
        queueLimit: p.queueLimit,
        guestLimit: p.guestLimit,
        maxWaitMs: p.maxWaitMs,
      })),
      run: (pool, input, ctx) => (this.#workers.get(pool) as PoolWorker).run(input, ctx),
    });
  }

  /** Starts the workers and listens on every address; fails (stopping what started) if one cannot. */
  static async start(config: MediatorConfig, options: MediatorOptions = {}): Promise<Mediator> {
    const mediator = new Mediator(config, options);
    try {
      for (const entry of config.listen) await mediator.#listenEntry(entry);
    } catch (err) {
      await mediator.close();
      throw err;
    }
    return mediator;
  }

  /** Submits as a guest of this host would, from inside (tests, the demo, embedding programs). */
  submit(guest: string, params: SubmitParams, ctx?: Partial<CallContext>): Promise<unknown> {
    return this.#submit(guest, params, ctx);
  }

  status(): MediatorStatus {
    const channels = [...this.#channels.entries()].map(([address, c]) => ({
      address,
      guest: c.guest ?? null,
      shared: c.entry.shared,
      sessions: c.server.sessions.size,
    }));
    return { ...this.#scheduler.status(), channels };
  }

  /** The addresses listened on now (a pattern's matches included). */
  get addresses(): string[] {
    return [...this.#channels.keys()];
  }

  /** Stops listening, fails what is queued, waits for what runs, stops the workers. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await Promise.all(this.#discoveries.map((d) => d.stop()));
    await this.#scheduler.close();
    // Every reply has been handed to its session; a guest that went away is not waited for.
    await Promise.all(
      [...this.#channels.values()].map((c) => c.server.close({ graceMs: CLOSE_GRACE_MS })),
    );
    this.#channels.clear();
    await Promise.all([...this.#workers.values()].map((w) => w.stop()));
  }

  async #listenEntry(entry: ListenEntry): Promise<void> {
    if (!entry.address.includes("*")) {
      await this.#listenOn(
        entry,
        entry.address,
        entry.shared ? undefined : (entry.name ?? entry.address),
      );
      return;
    }
    const parsed = parseAddress(entry.address.replaceAll("*", "x"));
    const prefix = `${parsed.kind}:`;
    const failed = new Set<string>();
    const discovery: Discovery = new Discovery(
      entry.address.slice(prefix.length),
      {
        found: (match) => {
          const address = `${prefix}${match.path}`;
          const listening = async () => {
            // A mailbox folder inside the guest's folder is ours to make.
            if (parsed.kind === "mailbox") await mkdir(match.path, { recursive: true });
            await this.#listenOn(entry, address, entry.shared ? undefined : match.name);
            failed.delete(address);
          };
          return listening().catch((err: unknown) => {
            // Tried again at the next scan; said once.
            discovery.forget(match.path);
            if (failed.has(address)) return;
            failed.add(address);
            this.#log(
              "warn",
              `cannot listen on ${address} (trying again): ${(err as Error).message}`,
              {
                address,
              },
            );
          });
        },
        lost: (match) => {
          const address = `${prefix}${match.path}`;
          const channel = this.#channels.get(address);
          if (channel === undefined) return;
          this.#channels.delete(address);
          this.#log("info", `guest ${match.name} is gone: its folder vanished`, { address });
          void channel.server.close({ abort: true });
        },
      },
      this.#pollMs,
    );
    this.#discoveries.push(discovery);
    await discovery.start();
  }

  async #listenOn(entry: ListenEntry, address: string, guest: string | undefined): Promise<void> {
    if (this.#closing !== undefined || this.#channels.has(address)) return;
    const key = entry.keyFile === undefined ? undefined : await readKeyFile(entry.keyFile);
    const server = await serveSessions(
      address,
      (session) => this.#serve(session, entry, guest),
      {
        services: [MEDIATOR_SERVICE],
        peer: { id: `mediator@${hostname()}`, hostname: hostname(), version: VERSION },
      },
      {
        ...(key === undefined ? {} : { key }),
        maxSessions: entry.maxConnections,
        maxHandshaking: entry.maxPending,
        onRefused: ({ peer, reason }) =>
          this.#log("warn", `refused ${peer}: ${reason}`, { address, peer, code: "AUTH_FAILED" }),
      },
    );
    if (this.#closing !== undefined) {
      await server.close();
      return;
    }
    this.#channels.set(address, { entry, guest, server });
    this.#log("info", `listening on ${address}`, {
      address,
      guest: guest ?? null,
      shared: entry.shared,
    });
  }

  #serve(session: Session, entry: ListenEntry, guest: string | undefined): void {
    const flowOf = () => guest ?? `${entry.name ?? entry.address}#${session.peer?.id ?? "?"}`;
    session.handle(SUBMIT_METHOD, (params, ctx) => {
      const parsed = v.safeParse(SubmitParams, params);
      if (!parsed.success) {
        throw new InvalidOptionError(
          `${SUBMIT_METHOD}: ${parsed.issues[0]?.message ?? "bad request"} (expected {pool, priority?, input?, key?})`,
        );
      }
      return this.#submit(flowOf(), parsed.output, ctx);
    });
    session.handle(STATUS_METHOD, () => this.status());
    void session.ready.then(
      () =>
        this.#log("info", `guest ${flowOf()} connected`, {
          guest: flowOf(),
          peer: session.peer?.id,
        }),
      () => {},
    );
  }

  #submit(flow: string, params: SubmitParams, ctx: Partial<CallContext> = {}): Promise<unknown> {
    const pool = this.config.pools.find((p) => p.name === params.pool);
    const priority = params.priority ?? pool?.weights.length ?? 1;
    const deadline = ctx.deadline;
    return this.#scheduler.submit({
      pool: params.pool,
      priority,
      flow,
      input: params.input ?? null,
      key: params.key,
      deadline: deadline !== undefined && Number.isFinite(deadline) ? deadline : undefined,
      signal: ctx.cancellation ?? ctx.signal,
    });
  }
}
