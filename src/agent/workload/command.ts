/**
 * The `command` workload: an argv run again and again, `concurrency` at a time, each run one
 * operation timed from spawn to exit; a non-zero exit, a signal or a failed spawn is an error.
 * Each run leads its own process group, which is killed when the run is stopped. Output goes to
 * the call's `output` stream, muxed by run (fleet/protocol.ts), with backpressure reaching back to
 * the runs' pipes — never held whole in memory; without the stream it is read and dropped.
 */
import { spawn } from "node:child_process";
import { performance } from "node:perf_hooks";
import type { Readable } from "node:stream";
import type { AbortSignalLike } from "../../abort.ts";
import { OUTPUT_HEADER_BYTES } from "../../fleet/protocol.ts";
import type { CommandWorkload } from "../../fleet/workload.ts";
import { GroupStopper } from "../../platform/process-group.ts";
import type { Clock } from "../../session/runtime.ts";
import type { SessionStream } from "../../session/stream.ts";
import type { CommandGroups } from "../command-groups.ts";
import type { IntervalRecorder } from "./recorder.ts";
import { runSlots } from "./slots.ts";

export interface CommandRunOptions {
  clock: Clock;
  signal: AbortSignalLike;
  recorder: IntervalRecorder;
  output: SessionStream | undefined;
  killGraceMs: number;
  /** Where the agent keeps its commands' process groups (so they die with it and their session). */
  groups: CommandGroups | undefined;
  owner: object;
}

/** Output of the runs, muxed onto one stream; pipes pause while the stream is full. */
class OutputMux {
  readonly #out: SessionStream;
  readonly #paused = new Set<Readable>();

  constructor(out: SessionStream) {
    this.#out = out;
    out.onDrain = () => {
      for (const pipe of this.#paused) pipe.resume();
      this.#paused.clear();
    };
  }

  chunk(run: number, which: 1 | 2, bytes: Uint8Array, pipe?: Readable): void {
    if (this.#out.closed) return;
    const header = Buffer.alloc(OUTPUT_HEADER_BYTES);
    header.writeUInt32BE(run >>> 0, 0);
    header.writeUInt8(which, 4);
    header.writeUInt32BE(bytes.length, 5);
    this.#out.write(header);
    if (!this.#out.write(bytes) && pipe !== undefined) {
      pipe.pause();
      this.#paused.add(pipe);
    }
  }

  end(): void {
    this.#out.end();
  }
}

export async function runCommand(
  workload: CommandWorkload,
  durationMs: number | undefined,
  o: CommandRunOptions,
): Promise<void> {
  const mux = o.output === undefined ? undefined : new OutputMux(o.output);
  const count = workload.count ?? (durationMs === undefined ? workload.concurrency : undefined);
  try {
    await runSlots(
      { concurrency: workload.concurrency, count, durationMs },
      o.clock,
      o.signal,
      (n) => runOnce(workload.argv, n, mux, o),
    );
  } finally {
    mux?.end();
  }
}

function runOnce(
  argv: string[],
  n: number,
  mux: OutputMux | undefined,
  o: CommandRunOptions,
): Promise<void> {
  const started = performance.now();
  const done = (error?: string) =>
    o.recorder.record("run", (performance.now() - started) * 1000, 0, error);
  return new Promise<void>((resolve) => {
    const [file, ...args] = argv as [string, ...string[]];
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stopper: GroupStopper | undefined;
    const onAbort = () => stopper?.stop("aborted");
    const pgid = child.pid;
    if (pgid !== undefined) {
      o.groups?.started(pgid, o.owner);
      stopper = new GroupStopper(pgid, o.killGraceMs);
      o.signal.addEventListener("abort", onAbort, { once: true });
      if (o.signal.aborted) onAbort();
    }
    const pipes: [Readable, 1 | 2][] = [
      [child.stdout, 1],
      [child.stderr, 2],
    ];
    for (const [pipe, which] of pipes) {
      pipe.on("data", (chunk: Buffer) => mux?.chunk(n, which, chunk, pipe));
      pipe.on("end", () => mux?.chunk(n, which, new Uint8Array(0)));
    }
    let spawnError: Error | undefined;
    child.once("error", (err) => {
      spawnError = err;
    });
    child.once("close", async (code, signal) => {
      if (stopper !== undefined && stopper.reason !== undefined) await stopper.waitGone();
      stopper?.dispose();
      o.signal.removeEventListener("abort", onAbort);
      if (pgid !== undefined) o.groups?.callEnded(pgid);
      if (spawnError !== undefined) {
        const code = (spawnError as NodeJS.ErrnoException).code;
        done(`run ${n}: ${file} could not start (${code ?? spawnError.message})`);
      } else if (signal !== null) done(`run ${n}: killed by ${signal}`);
      else if (code !== 0) done(`run ${n}: exit status ${code}`);
      else done();
      resolve();
    });
  });
}
