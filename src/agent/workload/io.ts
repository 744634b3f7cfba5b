/**
 * The `io` workload: file operations in a folder of the agent. Files are `DIR/guestlink-N.dat`
 * for N below `files`. One operation type runs over the files in order (operation n on file
 * n % files); a mix picks each operation's type by weight and its file at random, from a seed, so
 * a run can be repeated. Without a count or a duration, the workload is one pass over the files.
 */
import { mkdir, open, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { AbortSignalLike } from "../../abort.ts";
import type { OperationType } from "../../fleet/protocol.ts";
import { IO_OPERATIONS, type IoOperation, type IoWorkload } from "../../fleet/workload.ts";
import { mulberry32 } from "../../prng.ts";
import type { Clock } from "../../session/runtime.ts";
import type { IntervalRecorder } from "./recorder.ts";
import { runSlots } from "./slots.ts";

/** Reads and writes go in pieces of at most this size, from one buffer per slot. */
const CHUNK_BYTES = 1 << 20;

export function ioFile(workload: IoWorkload, n: number): string {
  return join(workload.dir, `guestlink-${n}.dat`);
}

/** Makes the workload's folder; fails (and the agent is not READY) if it cannot. */
export async function prepareIo(workload: IoWorkload): Promise<void> {
  await mkdir(workload.dir, { recursive: true });
}

export async function runIo(
  workload: IoWorkload,
  durationMs: number | undefined,
  seed: number,
  clock: Clock,
  signal: AbortSignalLike,
  recorder: IntervalRecorder,
): Promise<void> {
  const weighted = IO_OPERATIONS.filter((op) => (workload.mix[op] ?? 0) > 0);
  const total = weighted.reduce((sum, op) => sum + (workload.mix[op] ?? 0), 0);
  const single = weighted.length === 1 ? weighted[0] : undefined;
  const random = mulberry32(seed);
  const pick = (): IoOperation => {
    let r = random() * total;
    for (const op of weighted) {
      r -= workload.mix[op] ?? 0;
      if (r < 0) return op;
    }
    return weighted[weighted.length - 1] as IoOperation;
  };
  const count = workload.count ?? (durationMs === undefined ? workload.files : undefined);
  const buffers = Array.from({ length: workload.concurrency }, () =>
    Buffer.alloc(Math.min(CHUNK_BYTES, Math.max(1, workload.size)), 0x5a),
  );
  await runSlots(
    { concurrency: workload.concurrency, count, durationMs },
    clock,
    signal,
    async (n, slot) => {
      const op = single ?? pick();
      const file = ioFile(
        workload,
        single ? n % workload.files : Math.floor(random() * workload.files),
      );
      const started = performance.now();
      try {
        const bytes = await operate(op, file, workload.size, buffers[slot] as Buffer);
        recorder.record(op as OperationType, (performance.now() - started) * 1000, bytes);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        recorder.record(
          op as OperationType,
          (performance.now() - started) * 1000,
          0,
          `${op} ${file}: ${e.code ?? e.message}`,
        );
      }
    },
  );
}

async function operate(
  op: IoOperation,
  file: string,
  size: number,
  buffer: Buffer,
): Promise<number> {
  switch (op) {
    case "stat":
      await stat(file);
      return 0;
    case "delete":
      await unlink(file);
      return 0;
    case "write": {
      const handle = await open(file, "w");
      try {
        let written = 0;
        while (written < size) {
          const { bytesWritten } = await handle.write(
            buffer,
            0,
            Math.min(buffer.length, size - written),
          );
          written += bytesWritten;
        }
        return written;
      } finally {
        await handle.close();
      }
    }
    case "read": {
      const handle = await open(file, "r");
      try {
        let read = 0;
        for (;;) {
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
          if (bytesRead === 0) return read;
          read += bytesRead;
        }
      } finally {
        await handle.close();
      }
    }
  }
}
