/**
 * What an agent runs in a stage of a fleet run: the workload's definition. `readWorkload` reads
 * it as people write it in a plan (units, defaults, one line naming a wrong key); the controller
 * sends the result, and the agent checks it again against `WorkloadSchema` (protocol.ts), which
 * holds it to the same bounds.
 *
 * - `io`: file operations in a folder of the agent (write, read, stat, delete) on `files` files of
 *   `size` bytes, `concurrency` at a time, one operation type or a weighted `mix`.
 * - `command`: an argv run `count` times (or until the stage's duration), `concurrency` at a
 *   time; each run is one operation timed from spawn to exit, a non-zero exit an error.
 */
import { CheckError, type Fields, readMapping } from "./check.ts";

export const IO_OPERATIONS = ["write", "read", "stat", "delete"] as const;
export type IoOperation = (typeof IO_OPERATIONS)[number];

export interface IoWorkload {
  kind: "io";
  dir: string;
  files: number;
  size: number;
  concurrency: number;
  /** Weight of each operation type; one type alone is `{ [op]: 1 }`. */
  mix: Partial<Record<IoOperation, number>>;
  /** Operations to run in all (undefined: the stage's duration, or one per slot). */
  count: number | undefined;
}

export interface CommandWorkload {
  kind: "command";
  argv: string[];
  concurrency: number;
  count: number | undefined;
}

export type Workload = IoWorkload | CommandWorkload;

const MAX_CONCURRENCY = 4096;
const MAX_FILES = 1_000_000;
const MAX_COUNT = Number.MAX_SAFE_INTEGER;

/** Reads a workload (`{ io: … }` or `{ command: … }`) at `path`. */
export function readWorkload(value: unknown, path: string): Workload {
  return readMapping(value, path, (f) => {
    const io = f.mapping("io", readIo);
    const command = f.mapping("command", readCommand);
    if ((io === undefined) === (command === undefined)) {
      throw new CheckError(path, "expected exactly one of io, command");
    }
    return (io ?? command) as Workload;
  });
}

function readIo(f: Fields): IoWorkload {
  const dir = f.string("dir");
  const files = f.integer("files", 1, MAX_FILES, 1);
  const size = f.size("size", 0);
  const concurrency = f.integer("concurrency", 1, MAX_CONCURRENCY, 1);
  const count = f.integer("count", 1, MAX_COUNT, undefined);
  const op = f.oneOf("op", IO_OPERATIONS, undefined);
  const mix = f.mapping("mix", (m) => {
    const weights: Partial<Record<IoOperation, number>> = {};
    for (const name of IO_OPERATIONS) {
      if (m.has(name)) weights[name] = m.integer(name, 0, 1_000_000);
      else m.raw(name);
    }
    if (Object.values(weights).every((w) => w === 0)) {
      throw new CheckError(m.path, "give at least one operation a weight above 0");
    }
    return weights;
  });
  if (op !== undefined && mix !== undefined) {
    throw new CheckError(f.path, "give either op or mix, not both");
  }
  if (op === undefined && mix === undefined) {
    throw new CheckError(f.path, `give op (${IO_OPERATIONS.join(", ")}) or mix`);
  }
  return {
    kind: "io",
    dir,
    files,
    size,
    concurrency,
    count,
    mix: mix ?? { [op as IoOperation]: 1 },
  };
}

function readCommand(f: Fields): CommandWorkload {
  const argv = f.list(
    "argv",
    (v, p) => {
      if (typeof v !== "string") throw new CheckError(p, "expected a string");
      return v;
    },
    1,
  );
  const concurrency = f.integer("concurrency", 1, MAX_CONCURRENCY, 1);
  const count = f.integer("count", 1, MAX_COUNT, undefined);
  return { kind: "command", argv, concurrency, count };
}
