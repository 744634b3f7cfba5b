/**
 * The mediator's scheduler (issue 17): guests submit work to named pools at a priority; the
 * scheduler queues it by pool, priority level and guest ("flow"), starts it in the pool's slots
 * and hands the runner's reply back to every submitter waiting for it. Pure logic: no I/O, no
 * Node API, time only through the `Clock` it is given, so every rule runs under a fake clock.
 *
 * The order of dispatch in a pool, when a slot is free:
 *  - across levels, smooth weighted round robin over the levels that have queued work;
 *  - within a level, round robin across flows (one job each per turn);
 *  - within a flow at a level, first in, first out.
 *
 * Data structures are chosen so that 100,000 queued jobs cost O(1) each to queue, start or
 * remove: every flow at a level is a doubly linked list of jobs, every level a doubly linked
 * ring of its non-empty flows. Only `status()` walks the queues.
 */
import { type AbortSignalLike, deferred, LazyAbortController } from "../../abort.ts";
import { GuestlinkError, InvalidOptionError, toGuestlinkError } from "../../errors.ts";
import type { Clock, Timer } from "../../session/runtime.ts";
import { formatMs, timerAt } from "../../supervise/timers.ts";

export interface PoolSpec {
  name: string;
  /** Jobs running at once in this pool. */
  slots: number;
  /** One per priority level; weights[0] is priority 1 (most urgent). Length = number of levels. */
  weights: number[];
  /** Queued (not yet running) jobs in the pool; beyond → QUEUE_FULL at once. */
  queueLimit: number;
  /** Queued jobs of one flow in the pool; beyond → QUEUE_FULL at once. */
  guestLimit: number;
  /** Not started after this long → QUEUE_TIMEOUT, removed, never runs (Infinity: no limit). */
  maxWaitMs: number;
}

export interface RunContext {
  pool: string;
  priority: number;
  flow: string;
  key: string | undefined;
  /**
   * Absolute on the clock, Infinity if none: the latest deadline of the submitters attached
   * when the job started.
   */
  deadline: number;
  /** Aborted when every submitter of this job cancelled, or the deadline passed, or close(). */
  signal: AbortSignalLike;
}

export interface SchedulerOptions {
  clock: Clock;
  pools: PoolSpec[];
  /** Runs one job; its result (or rejection) is the reply. */
  run(pool: string, input: unknown, ctx: RunContext): Promise<unknown>;
  /** How long a finished job's reply is kept for its key. */
  keepMs: number;
  /** Most replies kept for keys in all (oldest dropped first). Default 100_000. */
  maxKept?: number;
  /**
   * Most replies kept for one guest (flow), its oldest dropped first: one guest submitting under
   * ever new keys pushes out its own replies, never another guest's. Default 10_000.
   */
  maxKeptPerGuest?: number;
}

export interface SubmitRequest {
  pool: string;
  /** 1..weights.length; else INVALID_OPTION naming the range. */
  priority: number;
  /** The guest, set by the mediator from the connection (never from the request). */
  flow: string;
  input: unknown;
  /** Idempotency key, scoped to (flow, pool, key). */
  key?: string;
  /** Absolute on the clock. */
  deadline?: number;
  /** This submitter cancels. */
  signal?: AbortSignalLike;
}

export interface LevelStatus {
  priority: number;
  weight: number;
  queued: number;
  running: number;
  /** Jobs whose run resolved. */
  done: number;
  /** Jobs whose run rejected (or threw). */
  failed: number;
  /** Submits refused with QUEUE_FULL, and jobs removed by QUEUE_TIMEOUT or their deadline before they started. */
  rejected: number;
  /** Jobs removed before they started because every submitter cancelled. */
  cancelled: number;
  /** Over the last 1024 waits (queued → started) at this level; null if none. */
  waitP50Ms: number | null;
  waitP99Ms: number | null;
  oldestWaitingMs: number | null;
}

export interface FlowStatus {
  flow: string;
  /** Submits to this pool (each attached or answered-from-kept submit counts). */
  submitted: number;
  /** Submits answered with a run's reply (its result or its rejection), kept ones included. */
  served: number;
  /** Submits refused or ended by the scheduler: QUEUE_FULL, QUEUE_TIMEOUT, DEADLINE_EXCEEDED. */
  rejected: number;
  /** Jobs of this flow queued / running (a job shared by attached submitters counts once). */
  queued: number;
  running: number;
}

export interface QueuedStatus {
  flow: string;
  priority: number;
  key: string | null;
  /** 1-based, within the level, in the order the level would dispatch them. */
  position: number;
  waitingMs: number;
}

export interface PoolStatus {
  name: string;
  slots: number;
  running: number;
  queued: number;
  levels: LevelStatus[];
  flows: FlowStatus[];
  queue: QueuedStatus[];
}

export interface SchedulerStatus {
  pools: PoolStatus[];
  kept: number;
}

const DEFAULT_MAX_KEPT = 100_000;
const DEFAULT_MAX_KEPT_PER_GUEST = 10_000;
const DEFAULT_MAX_QUEUED = 1000;
/** Waits (queued → started) remembered per level for the percentiles. */
const WAIT_SAMPLES = 1024;

interface FlowStats {
  flow: string;
  submitted: number;
  served: number;
  rejected: number;
  queued: number;
  running: number;
}

/** One caller waiting for a job's reply. Several attach to one job through a shared key. */
interface Submitter {
  job: Job;
  stats: FlowStats;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  signal: AbortSignalLike | undefined;
  onAbort: (() => void) | undefined;
  deadline: number;
  /** Its place in the scheduler's heap of deadlines; -1 when not in it. */
  heapIndex: number;
  /** Attach order: of two equal deadlines, the earlier attached passes first. */
  order: number;
  /** Its deadline passed while the job ran, and the runner has a moment to answer first. */
  expired: boolean;
  /** Answered and detached; nothing more happens to it. */
  done: boolean;
}

type JobState = "queued" | "running" | "settled" | "removed";

interface Job {
  pool: Pool;
  level: Level;
  stats: FlowStats;
  key: string | undefined;
  /** The key's identity in `#inflight` and `#kept`: (flow, pool, key). */
  slot: string | undefined;
  input: unknown;
  enqueuedAt: number;
  state: JobState;
  /** Neighbours in its flow's queue at its level. */
  prev: Job | undefined;
  next: Job | undefined;
  submitters: Set<Submitter>;
  waitTimer: Timer | undefined;
  graceTimer: Timer | undefined;
  controller: LazyAbortController | undefined;
  /** Running, but no submitter wants the reply any more: its signal was aborted, its key released. */
  orphaned: boolean;
}

/** The queued jobs of one flow at one level, and its place in the level's ring of flows. */
interface FlowQueue {
  flow: string;
  head: Job | undefined;
  tail: Job | undefined;
  count: number;
  ringPrev: FlowQueue | undefined;
  ringNext: FlowQueue | undefined;
}

interface Level {
  priority: number;
  weight: number;
  /** Smooth weighted round robin's running credit. */
  current: number;
  /** Non-empty flow queues only, so memory follows what is queued. */
  queues: Map<string, FlowQueue>;
  /** The flow whose turn is next, and the last in turn. */
  ringHead: FlowQueue | undefined;
  ringTail: FlowQueue | undefined;
  queued: number;
  running: number;
  done: number;
  failed: number;
  rejected: number;
  cancelled: number;
  waits: Float64Array;
  waitCount: number;
}

interface Pool {
  name: string;
  slots: number;
  queueLimit: number;
  guestLimit: number;
  maxWaitMs: number;
  levels: Level[];
  queued: number;
  running: number;
  runningJobs: Set<Job>;
  flows: Map<string, FlowStats>;
  /** Set while `#dispatch` runs, so a runner that submits synchronously does not nest it. */
  dispatching: boolean;
}

interface Kept {
  ok: boolean;
  value: unknown;
  expires: number;
  flow: string;
}

export class Scheduler {
  readonly #clock: Clock;
  readonly #run: SchedulerOptions["run"];
  readonly #keepMs: number;
  readonly #maxKept: number;
  readonly #maxKeptPerGuest: number;
  /** The key slots of each flow's kept replies, oldest first (for `maxKeptPerGuest`). */
  readonly #keptByFlow = new Map<string, Set<string>>();
  readonly #pools = new Map<string, Pool>();
  /** Jobs queued or running, by key slot, for submits with the same key to attach to. */
  readonly #inflight = new Map<string, Job>();
  /**
   * Finished jobs' replies by key slot, oldest first. Every entry lives `keepMs`, so insertion
   * order is expiry order: expired ones are dropped from the front lazily (on each submit,
   * finish and status), and `maxKept` bounds the map between.
   */
  readonly #kept = new Map<string, Kept>();
  #closing = false;
  readonly #closed = deferred<void>();
  /**
   * Submitters with a deadline, a binary min-heap by (deadline, order), and one timer for the
   * earliest. A platform timer each would cost some 600 bytes and a setTimeout/clearTimeout per
   * request, and every request through a session has a deadline (its call's, 2 min by default).
   */
  readonly #deadlines: Submitter[] = [];
  #deadlineTimer: Timer | undefined;
  /** When `#deadlineTimer` fires; it may be earlier than the heap's top (which then moved on). */
  #deadlineArmedAt = Number.POSITIVE_INFINITY;
  #attachOrder = 0;

  constructor(options: SchedulerOptions) {
    if (typeof options !== "object" || options === null) {
      throw new InvalidOptionError("scheduler options must be an object");
    }
    if (typeof options.run !== "function") {
      throw new InvalidOptionError("scheduler option run must be a function");
    }
    if (
      typeof options.clock !== "object" ||
      options.clock === null ||
      typeof options.clock.now !== "function" ||
      typeof options.clock.setTimer !== "function"
    ) {
      throw new InvalidOptionError("scheduler option clock must be a Clock (now, setTimer)");
    }
    this.#clock = options.clock;
    this.#run = options.run;
    this.#keepMs = nonNegative("keepMs", options.keepMs, true);
    this.#maxKept =
      options.maxKept === undefined ? DEFAULT_MAX_KEPT : count("maxKept", options.maxKept, false);
    this.#maxKeptPerGuest =
      options.maxKeptPerGuest === undefined
        ? DEFAULT_MAX_KEPT_PER_GUEST
        : count("maxKeptPerGuest", options.maxKeptPerGuest, false);
    if (!Array.isArray(options.pools) || options.pools.length === 0) {
      throw new InvalidOptionError("scheduler option pools must list at least one pool");
    }
    for (const spec of options.pools) {
      const pool = makePool(spec);
      if (this.#pools.has(pool.name)) {
        throw new InvalidOptionError(`pool "${pool.name}" is named twice`, {
          details: { pool: pool.name },
        });
      }
      this.#pools.set(pool.name, pool);
    }
  }

  /** Queues `request.input` in its pool; resolves or rejects with its reply. */
  submit(request: SubmitRequest): Promise<unknown> {
    return new Promise((resolve, reject) => {
      try {
        this.#submit(request, resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  }

  status(options: { maxQueued?: number } = {}): SchedulerStatus {
    const maxQueued =
      options.maxQueued === undefined
        ? DEFAULT_MAX_QUEUED
        : count("maxQueued", options.maxQueued, false);
    const now = this.#clock.now();
    this.#pruneKept(now);
    const pools: PoolStatus[] = [];
    for (const pool of this.#pools.values()) {
      const queue: QueuedStatus[] = [];
      for (const level of pool.levels) {
        if (queue.length >= maxQueued) break;
        listLevel(level, now, maxQueued - queue.length, queue);
      }
      pools.push({
        name: pool.name,
        slots: pool.slots,
        running: pool.running,
        queued: pool.queued,
        levels: pool.levels.map((level) => levelStatus(level, now)),
        flows: [...pool.flows.values()]
          .sort((a, b) => (a.flow < b.flow ? -1 : a.flow > b.flow ? 1 : 0))
          .map((f) => ({ ...f })),
        queue,
      });
    }
    return { pools, kept: this.#kept.size };
  }

  /**
   * Rejects every queued job (SESSION_CLOSED), aborts running ones, refuses new submits;
   * resolves when running ones settled. Submitters of running jobs get the runner's reply.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closed.promise;
    this.#closing = true;
    for (const pool of this.#pools.values()) {
      const err = closedError(pool.name);
      for (const level of pool.levels) {
        for (const queue of level.queues.values()) {
          for (let job = queue.head; job !== undefined; job = job.next) {
            job.state = "removed";
            job.waitTimer?.cancel();
            this.#release(job);
            for (const sub of job.submitters) {
              this.#detach(sub);
              sub.reject(err);
            }
          }
        }
        level.queues.clear();
        level.ringHead = undefined;
        level.ringTail = undefined;
        level.queued = 0;
      }
      pool.queued = 0;
      for (const stats of pool.flows.values()) stats.queued = 0;
      for (const job of pool.runningJobs) job.controller?.abort(err);
    }
    this.#kept.clear();
    this.#keptByFlow.clear();
    this.#checkClosed();
    return this.#closed.promise;
  }

  #submit(
    request: SubmitRequest,
    resolve: (value: unknown) => void,
    reject: (err: unknown) => void,
  ): void {
    if (typeof request !== "object" || request === null) {
      throw new InvalidOptionError("a submit request must be an object");
    }
    if (this.#closing) throw closedError(request.pool);
    const pool = typeof request.pool === "string" ? this.#pools.get(request.pool) : undefined;
    if (pool === undefined) {
      const available = [...this.#pools.keys()];
      throw new GuestlinkError(
        "POOL_NOT_FOUND",
        `the mediator has no pool ${JSON.stringify(request.pool)}; it has ${available.map((n) => JSON.stringify(n)).join(", ")}`,
        { details: { pool: request.pool, available } },
      );
    }
    const levels = pool.levels.length;
    const { priority, flow, key, deadline = Number.POSITIVE_INFINITY, signal } = request;
    if (!Number.isInteger(priority) || priority < 1 || priority > levels) {
      throw new InvalidOptionError(
        levels === 1
          ? `pool "${pool.name}" has one priority level: priority must be 1, not ${String(priority)}`
          : `priority must be an integer from 1 (most urgent) to ${levels} in pool "${pool.name}", not ${String(priority)}`,
        { details: { pool: pool.name, priority, min: 1, max: levels } },
      );
    }
    if (typeof flow !== "string") {
      throw new InvalidOptionError("a submit request's flow must be a string (the guest)", {
        details: { flow },
      });
    }
    if (key !== undefined && typeof key !== "string") {
      throw new InvalidOptionError("a submit request's key must be a string when given", {
        details: { key },
      });
    }
    if (typeof deadline !== "number" || Number.isNaN(deadline)) {
      throw new InvalidOptionError(
        "a submit request's deadline must be a number of milliseconds on the mediator's clock",
        { details: { deadline } },
      );
    }
    const level = pool.levels[priority - 1] as Level;
    const stats = flowStats(pool, flow);
    stats.submitted++;
    const now = this.#clock.now();

    if (signal?.aborted) {
      level.cancelled++;
      throw toGuestlinkError(signal.reason);
    }
    if (deadline <= now) {
      level.rejected++;
      stats.rejected++;
      throw new GuestlinkError(
        "DEADLINE_EXCEEDED",
        `the request's deadline had passed when it reached pool "${pool.name}"; it was not queued`,
        { details: { pool: pool.name, priority, lateMs: now - deadline } },
      );
    }

    let slot: string | undefined;
    if (key !== undefined) {
      slot = JSON.stringify([flow, pool.name, key]);
      const kept = this.#lookupKept(slot, now);
      if (kept !== undefined) {
        stats.served++;
        if (kept.ok) resolve(kept.value);
        else reject(kept.value);
        return;
      }
      const running = this.#inflight.get(slot);
      if (running !== undefined) {
        this.#attach(running, stats, resolve, reject, signal, deadline);
        return;
      }
    }

    // Only a job that would wait counts against the limits: with a slot free it starts now.
    if (pool.running >= pool.slots || pool.queued > 0) {
      if (pool.queued >= pool.queueLimit) {
        level.rejected++;
        stats.rejected++;
        throw new GuestlinkError(
          "QUEUE_FULL",
          `pool "${pool.name}" already holds ${pool.queued} queued requests (its queue_limit); nothing was queued: submit again later, or raise the pool's queue_limit`,
          { details: { pool: pool.name, limit: pool.queueLimit, queued: pool.queued } },
        );
      }
      if (stats.queued >= pool.guestLimit) {
        level.rejected++;
        stats.rejected++;
        throw new GuestlinkError(
          "QUEUE_FULL",
          `this guest already has ${stats.queued} requests queued in pool "${pool.name}" (its guest_limit); nothing was queued: wait for some to start, or raise the pool's guest_limit`,
          {
            details: { pool: pool.name, flow, limit: pool.guestLimit, queued: stats.queued },
          },
        );
      }
    }

    const job: Job = {
      pool,
      level,
      stats,
      key,
      slot,
      input: request.input,
      enqueuedAt: now,
      state: "queued",
      prev: undefined,
      next: undefined,
      submitters: new Set(),
      waitTimer: undefined,
      graceTimer: undefined,
      controller: undefined,
      orphaned: false,
    };
    if (slot !== undefined) this.#inflight.set(slot, job);
    this.#enqueue(job, flow);
    this.#attach(job, stats, resolve, reject, signal, deadline);
    this.#dispatch(pool);
    if (job.state === "queued" && pool.maxWaitMs < Number.POSITIVE_INFINITY) {
      job.waitTimer = timerAt(this.#clock, now + pool.maxWaitMs, () => this.#waitedTooLong(job));
    }
  }

  #attach(
    job: Job,
    stats: FlowStats,
    resolve: (value: unknown) => void,
    reject: (err: unknown) => void,
    signal: AbortSignalLike | undefined,
    deadline: number,
  ): void {
    const sub: Submitter = {
      job,
      stats,
      resolve,
      reject,
      signal,
      onAbort: undefined,
      deadline,
      heapIndex: -1,
      order: this.#attachOrder++,
      expired: false,
      done: false,
    };
    job.submitters.add(sub);
    if (signal !== undefined) {
      sub.onAbort = () => this.#cancelled(sub);
      signal.addEventListener("abort", sub.onAbort, { once: true });
    }
    if (deadline < Number.POSITIVE_INFINITY) {
      heapPush(this.#deadlines, sub);
      this.#armDeadlines();
    }
  }

  /** Answers no more to `sub`: removes it from its job and drops its listener and timer. */
  #detach(sub: Submitter): void {
    sub.done = true;
    sub.job.submitters.delete(sub);
    if (sub.onAbort !== undefined) sub.signal?.removeEventListener("abort", sub.onAbort);
    if (sub.heapIndex >= 0) {
      heapRemove(this.#deadlines, sub);
      // No deadline left: no timer either. Else one armed for a gone deadline fires early and
      // re-arms for the next.
      if (this.#deadlines.length === 0 && this.#deadlineTimer !== undefined) {
        this.#deadlineTimer.cancel();
        this.#deadlineTimer = undefined;
        this.#deadlineArmedAt = Number.POSITIVE_INFINITY;
      }
    }
  }

  /** Arms the timer for the earliest deadline, unless it already fires no later than that. */
  #armDeadlines(): void {
    const first = this.#deadlines[0];
    if (first === undefined || this.#deadlineArmedAt <= first.deadline) return;
    this.#deadlineTimer?.cancel();
    this.#deadlineArmedAt = first.deadline;
    this.#deadlineTimer = timerAt(this.#clock, first.deadline, () => this.#deadlinesDue());
  }

  /** The timer fired: every submitter whose deadline has come, earliest first; then re-arms. */
  #deadlinesDue(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineArmedAt = Number.POSITIVE_INFINITY;
    const now = this.#clock.now();
    for (let first = this.#deadlines[0]; first !== undefined; first = this.#deadlines[0]) {
      if (first.deadline > now) break;
      heapRemove(this.#deadlines, first);
      this.#deadlinePassed(first);
    }
    this.#armDeadlines();
  }

  #cancelled(sub: Submitter): void {
    if (sub.done) return;
    const job = sub.job;
    const err = toGuestlinkError(sub.signal?.reason);
    this.#detach(sub);
    sub.reject(err);
    if (job.submitters.size > 0) return;
    if (job.state === "queued") {
      this.#remove(job);
      job.level.cancelled++;
    } else if (job.state === "running") {
      this.#orphan(job, err);
    }
  }

  #deadlinePassed(sub: Submitter): void {
    if (sub.done) return;
    const job = sub.job;
    const pool = job.pool;
    const now = this.#clock.now();
    if (job.state === "queued") {
      this.#detach(sub);
      sub.stats.rejected++;
      sub.reject(queuedDeadlineError(job, now));
      if (job.submitters.size === 0) {
        this.#remove(job);
        job.level.rejected++;
      }
      return;
    }
    if (job.state !== "running") return;
    const err = new GuestlinkError(
      "DEADLINE_EXCEEDED",
      `the request's deadline passed while it ran in pool "${pool.name}" (for ${formatMs(now - job.enqueuedAt)} in all)`,
      { details: { pool: pool.name, priority: job.level.priority } },
    );
    let others = false;
    for (const s of job.submitters) if (s !== sub && !s.expired) others = true;
    if (others) {
      this.#detach(sub);
      sub.stats.rejected++;
      sub.reject(err);
      return;
    }
    // The last one waiting: abort the run, and give a runner that honours the signal until
    // the next timer turn to answer (its rejection is the reply); else DEADLINE_EXCEEDED.
    sub.expired = true;
    this.#orphan(job, err);
    job.graceTimer ??= this.#clock.setTimer(0, () => {
      job.graceTimer = undefined;
      for (const s of job.submitters) {
        if (!s.expired) continue;
        this.#detach(s);
        s.stats.rejected++;
        s.reject(err);
      }
    });
  }

  #waitedTooLong(job: Job): void {
    job.waitTimer = undefined;
    if (job.state !== "queued") return;
    const pool = job.pool;
    const waited = this.#clock.now() - job.enqueuedAt;
    this.#remove(job);
    job.level.rejected++;
    const err = new GuestlinkError(
      "QUEUE_TIMEOUT",
      `the request waited ${formatMs(waited)} in pool "${pool.name}"'s queue (its max_wait) and was not started; it was removed and will not run`,
      {
        details: {
          pool: pool.name,
          priority: job.level.priority,
          maxWaitMs: pool.maxWaitMs,
          queued: pool.queued,
          running: pool.running,
        },
      },
    );
    for (const sub of job.submitters) {
      this.#detach(sub);
      sub.stats.rejected++;
      sub.reject(err);
    }
  }

  /** Nobody waits for the running job's reply any more: stop it and let its key run afresh. */
  #orphan(job: Job, reason: GuestlinkError): void {
    if (job.orphaned) return;
    job.orphaned = true;
    this.#release(job);
    job.controller?.abort(reason);
  }

  #release(job: Job): void {
    if (job.slot !== undefined && this.#inflight.get(job.slot) === job) {
      this.#inflight.delete(job.slot);
    }
  }

  #enqueue(job: Job, flow: string): void {
    const level = job.level;
    let queue = level.queues.get(flow);
    if (queue === undefined) {
      queue = {
        flow,
        head: undefined,
        tail: undefined,
        count: 0,
        ringPrev: undefined,
        ringNext: undefined,
      };
      level.queues.set(flow, queue);
      ringAppend(level, queue); // a flow with new work takes its turn after every other
    }
    job.prev = queue.tail;
    if (queue.tail === undefined) queue.head = job;
    else queue.tail.next = job;
    queue.tail = job;
    queue.count++;
    level.queued++;
    job.pool.queued++;
    job.stats.queued++;
  }

  /** Takes a queued job out of its queue (to start it, or because it leaves). */
  #unqueue(job: Job): void {
    const level = job.level;
    const queue = level.queues.get(job.stats.flow) as FlowQueue;
    if (job.prev === undefined) queue.head = job.next;
    else job.prev.next = job.next;
    if (job.next === undefined) queue.tail = job.prev;
    else job.next.prev = job.prev;
    job.prev = undefined;
    job.next = undefined;
    queue.count--;
    level.queued--;
    job.pool.queued--;
    job.stats.queued--;
    job.waitTimer?.cancel();
    job.waitTimer = undefined;
    if (queue.count === 0) {
      ringRemove(level, queue);
      level.queues.delete(queue.flow);
    }
  }

  /** A queued job leaves without running. */
  #remove(job: Job): void {
    this.#unqueue(job);
    job.state = "removed";
    this.#release(job);
  }

  /** Starts queued jobs while the pool has free slots. */
  #dispatch(pool: Pool): void {
    if (pool.dispatching) return;
    pool.dispatching = true;
    try {
      while (pool.running < pool.slots && pool.queued > 0) {
        const level = pickLevel(pool);
        const queue = level.ringHead as FlowQueue;
        const job = queue.head as Job;
        this.#unqueue(job);
        if (queue.count > 0) {
          // This flow had its turn: to the back of the ring.
          ringRemove(level, queue);
          ringAppend(level, queue);
        }
        // A deadline timer may run late: one that has passed is never started.
        const now = this.#clock.now();
        for (const sub of job.submitters) {
          if (sub.deadline > now) continue;
          this.#detach(sub);
          sub.stats.rejected++;
          sub.reject(queuedDeadlineError(job, now));
        }
        if (job.submitters.size === 0) {
          job.state = "removed";
          this.#release(job);
          level.rejected++;
          continue;
        }
        this.#start(job, now);
      }
    } finally {
      pool.dispatching = false;
    }
  }

  #start(job: Job, now: number): void {
    const { pool, level } = job;
    job.state = "running";
    pool.running++;
    level.running++;
    job.stats.running++;
    pool.runningJobs.add(job);
    level.waits[level.waitCount % WAIT_SAMPLES] = now - job.enqueuedAt;
    level.waitCount++;
    let deadline = Number.NEGATIVE_INFINITY;
    for (const sub of job.submitters) deadline = Math.max(deadline, sub.deadline);
    const controller = new LazyAbortController();
    job.controller = controller;
    const ctx: RunContext = {
      pool: pool.name,
      priority: level.priority,
      flow: job.stats.flow,
      key: job.key,
      deadline,
      get signal() {
        return controller.signal;
      },
    };
    let reply: Promise<unknown>;
    try {
      reply = Promise.resolve(this.#run(pool.name, job.input, ctx));
    } catch (err) {
      reply = Promise.reject(err);
    }
    reply.then(
      (value) => this.#finish(job, true, value),
      (err: unknown) => this.#finish(job, false, err),
    );
  }

  #finish(job: Job, ok: boolean, value: unknown): void {
    const { pool, level } = job;
    job.state = "settled";
    pool.running--;
    level.running--;
    job.stats.running--;
    pool.runningJobs.delete(job);
    if (ok) level.done++;
    else level.failed++;
    job.graceTimer?.cancel();
    job.graceTimer = undefined;
    job.input = undefined;
    if (!job.orphaned && job.slot !== undefined) {
      this.#release(job);
      if (!this.#closing) this.#keep(job.slot, job.stats.flow, ok, value);
    }
    for (const sub of job.submitters) {
      this.#detach(sub);
      sub.stats.served++;
      if (ok) sub.resolve(value);
      else sub.reject(value);
    }
    this.#dispatch(pool);
    this.#checkClosed();
  }

  #keep(slot: string, flow: string, ok: boolean, value: unknown): void {
    if (this.#maxKept === 0 || this.#keepMs <= 0) return;
    const now = this.#clock.now();
    this.#pruneKept(now);
    this.#dropKept(slot);
    this.#kept.set(slot, { ok, value, expires: now + this.#keepMs, flow });
    let mine = this.#keptByFlow.get(flow);
    if (mine === undefined) {
      mine = new Set();
      this.#keptByFlow.set(flow, mine);
    }
    mine.add(slot);
    // This guest's share first: past it, its own oldest reply goes.
    while (mine.size > this.#maxKeptPerGuest) {
      this.#dropKept(mine.values().next().value as string);
    }
    while (this.#kept.size > this.#maxKept) {
      this.#dropKept(this.#kept.keys().next().value as string);
    }
  }

  /** Forgets the reply kept for `slot`, if there is one. */
  #dropKept(slot: string): void {
    const kept = this.#kept.get(slot);
    if (kept === undefined) return;
    this.#kept.delete(slot);
    const mine = this.#keptByFlow.get(kept.flow);
    mine?.delete(slot);
    if (mine?.size === 0) this.#keptByFlow.delete(kept.flow);
  }

  #lookupKept(slot: string, now: number): Kept | undefined {
    this.#pruneKept(now);
    return this.#kept.get(slot);
  }

  /** Drops expired replies; they are in expiry order, so it stops at the first live one. */
  #pruneKept(now: number): void {
    for (const [slot, kept] of this.#kept) {
      if (kept.expires > now) break;
      this.#dropKept(slot);
    }
  }

  #checkClosed(): void {
    if (!this.#closing) return;
    for (const pool of this.#pools.values()) if (pool.running > 0) return;
    this.#closed.resolve();
  }
}

/**
 * Smooth weighted round robin (nginx's) over the levels with queued work: each turn every such
 * level earns its weight, the one with the most credit goes (ties to the more urgent) and pays
 * the turn's total. Chosen over deficit round robin because every job costs one slot, so DRR's
 * quantum/deficit accounting reduces to plain weighted round robin, which sends a level's share
 * in bursts; SWRR spreads it (weights 8:1 give the low level one turn in every 9, never more
 * than 8 urgent ones in a row), so a low level moves steadily, with O(levels) work a turn.
 *
 * A level with no work neither earns nor pays: it keeps its credit or debt until it has work
 * again. Credit over all levels always sums to zero, so it stays bounded; a level that empties
 * just after its turn comes back with that turn's debt, so draining and refilling one job at a
 * time earns it no more than its share.
 */
function pickLevel(pool: Pool): Level {
  let total = 0;
  let best: Level | undefined;
  for (const level of pool.levels) {
    if (level.queued === 0) continue;
    level.current += level.weight;
    total += level.weight;
    if (best === undefined || level.current > best.current) best = level;
  }
  const chosen = best as Level;
  chosen.current -= total;
  return chosen;
}

/** Of two submitters, the one whose deadline passes first (the earlier attached on a tie). */
function before(a: Submitter, b: Submitter): boolean {
  return a.deadline < b.deadline || (a.deadline === b.deadline && a.order < b.order);
}

function heapPush(heap: Submitter[], sub: Submitter): void {
  sub.heapIndex = heap.length;
  heap.push(sub);
  siftUp(heap, sub.heapIndex);
}

function heapRemove(heap: Submitter[], sub: Submitter): void {
  const at = sub.heapIndex;
  sub.heapIndex = -1;
  const last = heap.pop() as Submitter;
  if (last === sub) return;
  heap[at] = last;
  last.heapIndex = at;
  siftUp(heap, at);
  siftDown(heap, last.heapIndex);
}

function siftUp(heap: Submitter[], at: number): void {
  const sub = heap[at] as Submitter;
  while (at > 0) {
    const up = (at - 1) >> 1;
    const parent = heap[up] as Submitter;
    if (!before(sub, parent)) break;
    heap[at] = parent;
    parent.heapIndex = at;
    at = up;
  }
  heap[at] = sub;
  sub.heapIndex = at;
}

function siftDown(heap: Submitter[], at: number): void {
  const sub = heap[at] as Submitter;
  const n = heap.length;
  for (;;) {
    const left = 2 * at + 1;
    if (left >= n) break;
    const right = left + 1;
    const child =
      right < n && before(heap[right] as Submitter, heap[left] as Submitter) ? right : left;
    const next = heap[child] as Submitter;
    if (!before(next, sub)) break;
    heap[at] = next;
    next.heapIndex = at;
    at = child;
  }
  heap[at] = sub;
  sub.heapIndex = at;
}

function ringAppend(level: Level, queue: FlowQueue): void {
  queue.ringNext = undefined;
  queue.ringPrev = level.ringTail;
  if (level.ringTail === undefined) level.ringHead = queue;
  else level.ringTail.ringNext = queue;
  level.ringTail = queue;
}

function ringRemove(level: Level, queue: FlowQueue): void {
  if (queue.ringPrev === undefined) level.ringHead = queue.ringNext;
  else queue.ringPrev.ringNext = queue.ringNext;
  if (queue.ringNext === undefined) level.ringTail = queue.ringPrev;
  else queue.ringNext.ringPrev = queue.ringPrev;
  queue.ringPrev = undefined;
  queue.ringNext = undefined;
}

/** A level's queued jobs in the order it would dispatch them: one per flow per round. */
function listLevel(level: Level, now: number, max: number, into: QueuedStatus[]): void {
  let cursors: Job[] = [];
  for (let q = level.ringHead; q !== undefined; q = q.ringNext) if (q.head) cursors.push(q.head);
  let position = 0;
  while (cursors.length > 0) {
    const next: Job[] = [];
    for (const job of cursors) {
      if (position >= max) return;
      into.push({
        flow: job.stats.flow,
        priority: level.priority,
        key: job.key ?? null,
        position: ++position,
        waitingMs: now - job.enqueuedAt,
      });
      if (job.next !== undefined) next.push(job.next);
    }
    cursors = next;
  }
}

function levelStatus(level: Level, now: number): LevelStatus {
  const n = Math.min(level.waitCount, WAIT_SAMPLES);
  const waits = level.waits.slice(0, n).sort();
  const percentile = (p: number) => (n === 0 ? null : (waits[Math.ceil(p * n) - 1] as number));
  let oldest: number | null = null;
  // Each flow's queue is in arrival order, so the oldest job is one of the heads.
  for (let q = level.ringHead; q !== undefined; q = q.ringNext) {
    const head = q.head;
    if (head !== undefined && (oldest === null || head.enqueuedAt < oldest)) {
      oldest = head.enqueuedAt;
    }
  }
  return {
    priority: level.priority,
    weight: level.weight,
    queued: level.queued,
    running: level.running,
    done: level.done,
    failed: level.failed,
    rejected: level.rejected,
    cancelled: level.cancelled,
    waitP50Ms: percentile(0.5),
    waitP99Ms: percentile(0.99),
    oldestWaitingMs: oldest === null ? null : now - oldest,
  };
}

function flowStats(pool: Pool, flow: string): FlowStats {
  let stats = pool.flows.get(flow);
  if (stats === undefined) {
    stats = { flow, submitted: 0, served: 0, rejected: 0, queued: 0, running: 0 };
    pool.flows.set(flow, stats);
  }
  return stats;
}

function makePool(spec: PoolSpec): Pool {
  if (typeof spec !== "object" || spec === null) {
    throw new InvalidOptionError("each pool must be an object (name, slots, weights, …)");
  }
  const name = spec.name;
  if (typeof name !== "string" || name === "") {
    throw new InvalidOptionError("a pool's name must be a non-empty string", {
      details: { name },
    });
  }
  const option = (field: string) => `pool "${name}": ${field}`;
  const slots = count(option("slots"), spec.slots, false);
  if (slots < 1) {
    throw new InvalidOptionError(`${option("slots")} must be at least 1, not ${slots}`, {
      details: { pool: name, slots },
    });
  }
  const weights = spec.weights;
  if (
    !Array.isArray(weights) ||
    weights.length === 0 ||
    !weights.every((w) => typeof w === "number" && Number.isFinite(w) && w > 0)
  ) {
    throw new InvalidOptionError(
      `${option("weights")} must list one positive number per priority level (the first for priority 1)`,
      { details: { pool: name, weights } },
    );
  }
  return {
    name,
    slots,
    queueLimit: count(option("queueLimit"), spec.queueLimit, true),
    guestLimit: count(option("guestLimit"), spec.guestLimit, true),
    maxWaitMs: nonNegative(option("maxWaitMs"), spec.maxWaitMs, true),
    levels: weights.map((weight, i) => ({
      priority: i + 1,
      weight,
      current: 0,
      queues: new Map(),
      ringHead: undefined,
      ringTail: undefined,
      queued: 0,
      running: 0,
      done: 0,
      failed: 0,
      rejected: 0,
      cancelled: 0,
      waits: new Float64Array(WAIT_SAMPLES),
      waitCount: 0,
    })),
    queued: 0,
    running: 0,
    runningJobs: new Set(),
    flows: new Map(),
    dispatching: false,
  };
}

/** A whole number ≥ 0 (or Infinity when `infinite`). */
function count(name: string, value: unknown, infinite: boolean): number {
  if (
    typeof value === "number" &&
    value >= 0 &&
    (Number.isInteger(value) || (infinite && value === Number.POSITIVE_INFINITY))
  ) {
    return value;
  }
  throw new InvalidOptionError(
    `${name} must be a whole number ≥ 0${infinite ? " (or Infinity)" : ""}, not ${String(value)}`,
    { details: { option: name, value } },
  );
}

/** Milliseconds ≥ 0 (or Infinity when `infinite`). */
function nonNegative(name: string, value: unknown, infinite: boolean): number {
  if (
    typeof value === "number" &&
    value >= 0 &&
    (Number.isFinite(value) || (infinite && value === Number.POSITIVE_INFINITY))
  ) {
    return value;
  }
  throw new InvalidOptionError(
    `${name} must be a number of milliseconds ≥ 0${infinite ? " (or Infinity)" : ""}, not ${String(value)}`,
    { details: { option: name, value } },
  );
}

function queuedDeadlineError(job: Job, now: number): GuestlinkError {
  return new GuestlinkError(
    "DEADLINE_EXCEEDED",
    `the request's deadline passed after ${formatMs(now - job.enqueuedAt)} in pool "${job.pool.name}"'s queue; it was not started and will not run`,
    { details: { pool: job.pool.name, priority: job.level.priority, queued: job.pool.queued } },
  );
}

function closedError(pool: unknown): GuestlinkError {
  return new GuestlinkError("SESSION_CLOSED", "the mediator is shutting down", {
    details: { pool },
  });
}
