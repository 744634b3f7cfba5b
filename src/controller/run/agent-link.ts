/**
 * The controller's side of the `workload` service (fleet/protocol.ts), for one agent's session:
 * its clock offset, configuring a stage (READY), and running it with its stats records read as
 * they come. Everything the agent sends is checked; a bad record fails that agent, not the run.
 */
import type { Writable } from "node:stream";
import { GuestlinkError } from "../../errors.ts";
import {
  ConfigureResult,
  METHOD_CONFIGURE,
  METHOD_RUN,
  METHOD_TIME,
  OUTPUT_HEADER_BYTES,
  RunOutcome,
  StatsRecord,
  TimeResult,
} from "../../fleet/protocol.ts";
import { toDuplex } from "../../platform/duplex.ts";
import type { OpenCall, Session } from "../../session/session.ts";
import type { SessionStream } from "../../session/stream.ts";
import { readLines } from "../lines.ts";
import { checkReply } from "../reply.ts";
import type { Stage } from "./plan.ts";

export type { RunOutcome, StatsRecord };

/** A stats line longer than this comes from a broken agent (a full histogram is ~100 KiB). */
const MAX_STATS_LINE_BYTES = 4 << 20;

function badReply(what: string, problem: string): GuestlinkError {
  return new GuestlinkError("BAD_RESULT", `the agent sent a bad ${what}: ${problem}`, {
    details: { problems: [problem] },
  });
}

/** The agent's wall clock now, ms since the epoch. */
export async function agentTime(session: Session, deadline: number): Promise<number> {
  const reply = await session.call(METHOD_TIME, {}, { deadline });
  return checkReply(METHOD_TIME, TimeResult, reply).wallMs;
}

/** Configures `stage` on the agent; resolves when it is READY. */
export async function configureStage(
  session: Session,
  stage: Stage,
  deadline: number,
): Promise<void> {
  const params: Record<string, unknown> = { stage: stage.name, workload: stage.workload };
  if (stage.durationMs !== undefined) params.durationMs = stage.durationMs;
  const reply = await session.call(METHOD_CONFIGURE, params, { deadline });
  checkReply(METHOD_CONFIGURE, ConfigureResult, reply);
}

export interface StageRun {
  /** Settles with the agent's outcome once every stats record before it was handed over. */
  readonly outcome: Promise<RunOutcome>;
  /** ABORT: the agent stops the workload and confirms with its outcome. */
  abort(): Promise<RunOutcome>;
}

/**
 * Starts `stage` on the agent at `startAtMs` (in the agent's clock). Each stats record goes to
 * `onRecord` in order; a command workload's output, when `output` is given, to the writer it
 * returns for each run and stream.
 */
export function runStage(
  session: Session,
  stage: string,
  startAtMs: number,
  intervalMs: number,
  onRecord: (record: StatsRecord) => void,
  output?: (run: number, stream: "stdout" | "stderr") => Writable,
): StageRun {
  const streams = output === undefined ? ["stats"] : ["stats", "output"];
  const call: OpenCall = session.open(
    METHOD_RUN,
    { stage, startAtMs, intervalMs },
    // A stage runs until its duration or count: its own timeouts are the controller's.
    { streams, deadline: Infinity },
  );
  call.result.catch(() => {});
  const stats = toDuplex(call.streams.stats as SessionStream);
  stats.end();
  const records = (async () => {
    const lines = readLines(stats as AsyncIterable<Buffer>, MAX_STATS_LINE_BYTES, () =>
      badReply("stats record", "a line without an end"),
    );
    for await (const line of lines) {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        throw badReply("stats record", "not JSON");
      }
      onRecord(checkReply(`${METHOD_RUN} (a stats record)`, StatsRecord, value));
    }
  })();
  const copied =
    output === undefined
      ? Promise.resolve()
      : demuxOutput(call.streams.output as SessionStream, output);
  const outcome = (async () => {
    const [result] = await Promise.all([call.result, records, copied]);
    return checkReply(METHOD_RUN, RunOutcome, result);
  })();
  outcome.catch(() => {});
  return {
    outcome,
    async abort() {
      call.cancel("the run was aborted");
      const confirmed = await call.confirmed;
      await records.catch(() => {});
      return checkReply(METHOD_RUN, RunOutcome, confirmed);
    },
  };
}

/** Splits the muxed `output` stream (fleet/protocol.ts) into a writer per run and stream. */
async function demuxOutput(
  stream: SessionStream,
  open: (run: number, stream: "stdout" | "stderr") => Writable,
): Promise<void> {
  const duplex = toDuplex(stream);
  duplex.end();
  const writers = new Map<string, Writable>();
  let buffered: Buffer = Buffer.alloc(0);
  let header: { run: number; which: "stdout" | "stderr"; left: number } | undefined;
  for await (const chunk of duplex as AsyncIterable<Buffer>) {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    for (;;) {
      if (header === undefined) {
        if (buffered.length < OUTPUT_HEADER_BYTES) break;
        const which = buffered.readUInt8(4);
        if (which !== 1 && which !== 2) throw badReply("output chunk", `stream ${which}`);
        header = {
          run: buffered.readUInt32BE(0),
          which: which === 1 ? "stdout" : "stderr",
          left: buffered.readUInt32BE(5),
        };
        buffered = buffered.subarray(OUTPUT_HEADER_BYTES);
        const key = `${header.run}:${header.which}`;
        if (header.left === 0) {
          writers.get(key)?.end();
          writers.delete(key);
          header = undefined;
          continue;
        }
      }
      if (buffered.length === 0) break;
      const key = `${header.run}:${header.which}`;
      let writer = writers.get(key);
      if (writer === undefined) {
        writer = open(header.run, header.which);
        writers.set(key, writer);
      }
      const piece = buffered.subarray(0, header.left);
      buffered = buffered.subarray(piece.length);
      header.left -= piece.length;
      if (!writer.write(piece)) await new Promise((resolve) => writer?.once("drain", resolve));
      if (header.left === 0) header = undefined;
    }
  }
  for (const writer of writers.values()) writer.end();
}
