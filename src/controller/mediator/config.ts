/**
 * The mediator's configuration (`guestlink mediate --config mediator.yaml`): where guests reach
 * it, its pools and their workers, how long replies are kept for their keys. Everything is
 * checked before anything listens; the first problem is CONFIG_INVALID naming the key's path.
 * docs/guides/mediator.md is the operator's reference.
 */
import { ConfigInvalidError, isGuestlinkError } from "../../errors.ts";
import { CheckError, type Fields, readMapping } from "../../fleet/check.ts";
import { parseAddress } from "../../transport/address.ts";
import { readYaml } from "../config-file.ts";

export interface ListenEntry {
  /** A guestlink address; a `unix:` or `mailbox:` path may hold `*` (one guest per match). */
  address: string;
  /** One socket for many clients: flows are split by the identity each peer gives. */
  shared: boolean;
  /** The flow's name for a plain address (default: the address); a glob's flows are its matches. */
  name: string | undefined;
  /** `key_file`: accept only connections with this key (tcp: only; docs/security.md). */
  keyFile?: string;
  /** `max_connections`: sessions this address holds at once (default: registry.ts's). */
  maxConnections?: number;
  /** `max_pending`: connections waiting for their HELLO at once; one more drops the oldest. */
  maxPending?: number;
}

export type WorkerSpec =
  | { kind: "helper"; argv: string[]; cwd: string | undefined }
  | { kind: "command"; argv: string[]; cwd: string | undefined };

export interface PoolConfig {
  name: string;
  slots: number;
  /** One per priority level, level 1 first. */
  weights: number[];
  queueLimit: number;
  guestLimit: number;
  maxWaitMs: number;
  /** Undefined only where the program gives the pool a worker function (`Mediator.start`). */
  worker: WorkerSpec | undefined;
}

export interface MediatorConfig {
  listen: ListenEntry[];
  pools: PoolConfig[];
  results: { keepMs: number; max: number; guestMax: number };
}

export const MEDIATOR_DEFAULTS = {
  queueLimit: 1000,
  keepMs: 10 * 60_000,
  maxKept: 100_000,
  maxKeptPerGuest: 10_000,
  maxSlots: 1024,
  maxPriorities: 16,
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Reads the config from YAML `text`; `source` names the file in errors (CONFIG_INVALID). */
export function parseMediatorConfig(text: string, source: string): MediatorConfig {
  return readYaml(text, source, (v) => readMediatorConfig(v), ConfigInvalidError);
}

/**
 * Reads a config already parsed from YAML or JSON. Throws CheckError. With `workers: "optional"`
 * a pool may leave out `worker:` (the program passes a worker function to `Mediator.start`).
 */
export function readMediatorConfig(
  value: unknown,
  options: { workers?: "required" | "optional" } = {},
): MediatorConfig {
  const workerRequired = options.workers !== "optional";
  return readMapping(value, "", (f) => {
    const listen = f.list("listen", readListen, 1);
    const seen = new Set<string>();
    listen.forEach((entry, i) => {
      if (seen.has(entry.address)) {
        throw new CheckError(`listen[${i}]`, `${entry.address} is listed twice`);
      }
      seen.add(entry.address);
    });
    const pools = f.list("pools", (v, path) => readPool(v, path, workerRequired), 1);
    const names = new Set<string>();
    pools.forEach((pool, i) => {
      if (names.has(pool.name)) {
        throw new CheckError(`pools[${i}].name`, `${JSON.stringify(pool.name)} is used twice`);
      }
      names.add(pool.name);
    });
    const results = f.mapping("results", (r) => ({
      keepMs: r.duration("keep", MEDIATOR_DEFAULTS.keepMs),
      max: r.integer("max", 1, 10_000_000, MEDIATOR_DEFAULTS.maxKept),
      guestMax: r.integer("guest_max", 1, 10_000_000, MEDIATOR_DEFAULTS.maxKeptPerGuest),
    })) ?? {
      keepMs: MEDIATOR_DEFAULTS.keepMs,
      max: MEDIATOR_DEFAULTS.maxKept,
      guestMax: MEDIATOR_DEFAULTS.maxKeptPerGuest,
    };
    return { listen, pools, results };
  });
}

function readListen(value: unknown, path: string): ListenEntry {
  const entry: ListenEntry =
    typeof value === "string"
      ? { address: value, shared: false, name: undefined }
      : readMapping(value, path, (f) => {
          const maxConnections = f.integer("max_connections", 1, 1_000_000, undefined);
          const maxPending = f.integer("max_pending", 1, 1_000_000, undefined);
          return {
            address: f.string("address"),
            shared: f.boolean("shared", false),
            name: f.string("name", undefined),
            keyFile: f.string("key_file", undefined),
            ...(maxConnections === undefined ? {} : { maxConnections }),
            ...(maxPending === undefined ? {} : { maxPending }),
          };
        });
  const where = typeof value === "string" ? path : `${path}.address`;
  const pattern = entry.address.includes("*");
  if (pattern) {
    const kind = entry.address.slice(0, entry.address.indexOf(":"));
    if (kind !== "unix" && kind !== "mailbox") {
      throw new CheckError(where, "only unix: and mailbox: paths may hold * (one guest per match)");
    }
    if (entry.name !== undefined) {
      throw new CheckError(`${path}.name`, "a pattern's guests are named by what its * matched");
    }
  }
  try {
    parseAddress(pattern ? entry.address.replaceAll("*", "x") : entry.address);
  } catch (err) {
    if (isGuestlinkError(err)) throw new CheckError(where, err.message);
    throw err;
  }
  if (entry.keyFile !== undefined && !entry.address.startsWith("tcp:")) {
    throw new CheckError(`${path}.key_file`, "a key applies to tcp: addresses only");
  }
  if (entry.name !== undefined && !NAME.test(entry.name)) {
    throw new CheckError(`${path}.name`, "use 1 to 64 letters, digits, '.', '_' and '-'");
  }
  return entry;
}

function readPool(value: unknown, path: string, workerRequired: boolean): PoolConfig {
  return readMapping(value, path, (f) => {
    const name = f.string("name");
    if (!NAME.test(name)) {
      throw new CheckError(f.at("name"), "use 1 to 64 letters, digits, '.', '_' and '-'");
    }
    const slots = f.integer("slots", 1, MEDIATOR_DEFAULTS.maxSlots, 1);
    const priorities = f.integer("priorities", 1, MEDIATOR_DEFAULTS.maxPriorities, undefined);
    const weights = readWeights(f, priorities);
    const queueLimit = f.integer("queue_limit", 1, 10_000_000, MEDIATOR_DEFAULTS.queueLimit);
    const guestLimit = f.integer("guest_limit", 1, 10_000_000, queueLimit);
    const maxWaitMs = f.duration("max_wait", Number.POSITIVE_INFINITY);
    const worker = f.mapping("worker", readWorker);
    if (worker === undefined && workerRequired) {
      throw new CheckError(f.at("worker"), "required, but missing");
    }
    return { name, slots, weights, queueLimit, guestLimit, maxWaitMs, worker };
  });
}

/** `weights`, one per level; without, each level weighs twice the next (3 levels: 4, 2, 1). */
function readWeights(f: Fields, priorities: number | undefined): number[] {
  const raw = f.raw("weights");
  const path = f.at("weights");
  if (raw === undefined) {
    const n = priorities ?? 1;
    return Array.from({ length: n }, (_, i) => 2 ** (n - 1 - i));
  }
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new CheckError(path, "expected a list of weights, one per priority level");
  }
  raw.forEach((w, i) => {
    if (typeof w !== "number" || !Number.isSafeInteger(w) || w < 1 || w > 1_000_000) {
      throw new CheckError(`${path}[${i}]`, "a weight is a whole number from 1 to 1000000");
    }
  });
  if (raw.length > MEDIATOR_DEFAULTS.maxPriorities) {
    throw new CheckError(path, `at most ${MEDIATOR_DEFAULTS.maxPriorities} levels`);
  }
  if (priorities !== undefined && raw.length !== priorities) {
    throw new CheckError(
      path,
      `${raw.length} weights for ${priorities} priorities: give one per level`,
    );
  }
  return raw as number[];
}

function readWorker(f: Fields): WorkerSpec {
  const helper = f.raw("helper");
  const command = f.raw("command");
  const cwd = f.string("cwd", undefined);
  if ((helper === undefined) === (command === undefined)) {
    throw new CheckError(
      f.path,
      "give the worker either helper: [program, args…] (JSON-RPC helpers, one per slot) or command: [program, args…] (a process per request)",
    );
  }
  const kind = helper !== undefined ? "helper" : "command";
  const argv = helper ?? command;
  if (
    !Array.isArray(argv) ||
    argv.length === 0 ||
    !argv.every((a) => typeof a === "string") ||
    argv[0] === ""
  ) {
    throw new CheckError(f.at(kind), "expected a list: the program, then its arguments");
  }
  return { kind, argv: argv as string[], cwd };
}
