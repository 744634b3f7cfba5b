/**
 * The host's side of exec: runs a command in an agent and connects its stdin, stdout and stderr
 * to local streams, with backpressure both ways. A local stdout that writes slowly withholds
 * credit from the agent, which stops reading the command's pipe, so the command itself slows
 * down; nothing piles up in memory on either side.
 *
 * The agent is untrusted input: its result is validated before it is returned.
 */
import type { Duplex } from "node:stream";
import * as v from "valibot";
import type { CallOptions } from "../abort.ts";
import {
  type ExecControlMessage,
  type ExecRequest,
  type ExecResult,
  ExecResultSchema,
  type ForwardableSignal,
  parseExecRequest,
} from "../agent/exec-contract.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import { adopt, release } from "../recycle.ts";
import type { Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";

export type { ExecControlMessage, ExecRequest, ExecResult, ForwardableSignal };

/**
 * Talks to a running exec: the terminal's size, signals for the command's process group. Pass
 * it in `ExecIo.control`; messages sent before the call starts wait for it, and those sent after
 * it ended are dropped.
 */
export class ExecControl {
  #stream: Duplex | undefined;
  #queued: string[] = [];
  #over = false;

  /** The terminal's new size (with `tty`); the kernel tells the command with SIGWINCH. */
  resize(rows: number, cols: number): void {
    this.#send({
      type: "resize",
      rows: Math.max(0, Math.floor(rows)),
      cols: Math.max(0, Math.floor(cols)),
    });
  }

  /** Sends `signal` to the command's process group (one of `FORWARDABLE_SIGNALS`). */
  signal(signal: ForwardableSignal): void {
    this.#send({ type: "signal", signal });
  }

  /** @internal remoteExec hands over the call's control stream, and takes it back. */
  attach(stream: Duplex | undefined): void {
    if (stream === undefined) {
      this.#over = true;
      this.#stream = undefined;
      this.#queued = [];
      return;
    }
    this.#stream = stream;
    for (const line of this.#queued.splice(0)) stream.write(line);
  }

  #send(message: ExecControlMessage): void {
    if (this.#over) return;
    const line = `${JSON.stringify(message)}\n`;
    if (this.#stream === undefined) this.#queued.push(line);
    else if (!this.#stream.destroyed && !this.#stream.writableEnded) this.#stream.write(line);
  }
}

export interface ExecIo {
  /** Copied to the command's stdin; without it the command's stdin is at end at once. */
  stdin?: NodeJS.ReadableStream | null;
  /** Receive the command's output. They are borrowed: never ended (they may be process.stdout). */
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Resize the command's terminal and signal it while it runs (sets `request.control`). */
  control?: ExecControl;
  /**
   * `stdout` and `stderr` keep no reference to a chunk once its write callback ran (as
   * process.stdout, a file or a socket; not a Writable that stores chunks): the session may then
   * read into the same buffers again (recycle.ts), which spares the garbage collector a buffer
   * for every read of the output. Default false.
   */
  recycle?: boolean;
}

/**
 * Runs `request` in the agent and resolves with how it ended once its result and all its output
 * have arrived (every byte written to `io.stdout` and `io.stderr`, write callbacks included).
 *
 * When `signal` aborts or `deadline` passes, the agent kills the command's process group and the
 * result says so (reason "cancelled", status 130; reason "timeout", status 124), with all output
 * produced until then delivered. A cancel that the agent cannot confirm because the connection
 * is down (or goes down before it confirms) rejects at once with CANCELLED and
 * `details.confirmed: false`: the command may still run until the cancel reaches the agent on a
 * resume, or the agent's resume window ends and it stops what the session started. Rejects with INVALID_OPTION for a bad request (before anything
 * is sent), or the session's error (then with CANCELLED/DEADLINE_EXCEEDED if that came first).
 *
 * A local output that fails (EPIPE when a reader goes away) is treated like a closed pipe: the
 * agent's stream is reset, the command's next write to that output fails (ECONNRESET or EPIPE
 * with SIGPIPE: Node gives children socketpairs, not pipes), and its result is returned. The
 * failure itself is the output stream's own `error` event.
 */
export async function remoteExec(
  session: Session,
  request: ExecRequest,
  io: ExecIo,
  options: CallOptions = {},
): Promise<ExecResult> {
  const checked = parseExecRequest(
    io.control === undefined ? request : { ...request, control: true },
  );
  const call = session.open("exec", checked, {
    streams: ["stdin", "stdout", "stderr", ...(checked.control ? ["control"] : [])],
    signal: options.signal,
    deadline: options.deadline,
  });
  const controlStream = call.streams.control as SessionStream | undefined;
  if (controlStream !== undefined && io.control !== undefined) {
    const duplex = toDuplex(controlStream);
    // The agent resets it when the call is over: nothing more to say then.
    duplex.on("error", () => {});
    io.control.attach(duplex);
  }
  const stdinStream = call.streams.stdin as SessionStream;
  // Directions that will carry nothing end now, in the same write as the call: ended later, each
  // END was a write of its own and a wake of the agent while the command ran.
  (call.streams.stdout as SessionStream).end();
  (call.streams.stderr as SessionStream).end();
  if (!io.stdin) stdinStream.end();
  // Without input the stream needs no Duplex: it is ended, and a reset from the agent is moot.
  const stdin = io.stdin ? feedInput(io.stdin, toDuplex(stdinStream)) : { detach() {} };
  const outputs = Promise.allSettled([
    copyOutput(toDuplex(call.streams.stdout as SessionStream), io.stdout, io.recycle === true),
    copyOutput(toDuplex(call.streams.stderr as SessionStream), io.stderr, io.recycle === true),
  ]);
  try {
    let value: unknown;
    try {
      value = await call.result;
    } catch (err) {
      if (!isGuestlinkError(err, "CANCELLED") && !isGuestlinkError(err, "DEADLINE_EXCEEDED")) {
        // A failed call has reset its streams: the copies end at once, and its error is the
        // one that matters, not theirs.
        await outputs;
        throw err;
      }
      // Cancelled here or timed out: the agent stops the command's process group, ends the
      // output streams and confirms with how the command ended (status 130 or 124).
      const unreachable = isGuestlinkError(err, "CANCELLED") ? whenUnreachable(session) : undefined;
      try {
        const first = await Promise.race([
          call.confirmed.then((v) => ({ confirmed: v })),
          ...(unreachable ? [unreachable.promise] : []),
        ]);
        if (!("confirmed" in first)) {
          throw new GuestlinkError(
            "CANCELLED",
            "cancelled while the agent was unreachable; the command may still be running in the agent until it is reached or its resume window ends",
            { cause: err, details: { method: "exec", confirmed: false } },
          );
        }
        value = first.confirmed;
      } catch (failure) {
        if (isGuestlinkError(failure) && failure.details?.confirmed === false) throw failure;
        await outputs;
        throw err;
      } finally {
        unreachable?.dispose();
      }
    }
    await outputs;
    for (const outcome of await outputs) {
      // The agent ends its output streams before it sends the result, so a copy can only fail
      // here if bytes were lost: never return a result as if they were not.
      if (outcome.status === "rejected") throw outcome.reason;
    }
    const parsed = v.safeParse(ExecResultSchema, value);
    if (!parsed.success) {
      const problems = parsed.issues.map(
        (issue) => `${v.getDotPath(issue) ?? "result"}: ${issue.message}`,
      );
      throw new GuestlinkError(
        "BAD_RESULT",
        `exec: the agent's result is malformed: ${problems.join("; ")}`,
        { details: { method: "exec", problems } },
      );
    }
    return parsed.output;
  } finally {
    io.control?.attach(undefined);
    if (controlStream !== undefined && !controlStream.closed) {
      controlStream.reset("CANCELLED", "the exec call is over");
    }
    stdin.detach();
    // The agent resets stdin when the command exits without reading all of it; if the reset has
    // not arrived (or the call failed first), end the stream here so the session can forget it.
    if (!stdinStream.closed) stdinStream.reset("CANCELLED", "the exec call is over");
  }
}

/** Resolves once `session` has no connection: now, or when it next loses one. */
function whenUnreachable(session: Session): {
  promise: Promise<{ unreachable: true }>;
  dispose(): void;
} {
  let off = () => {};
  const promise = new Promise<{ unreachable: true }>((resolve) => {
    if (session.connection === undefined) {
      resolve({ unreachable: true });
      return;
    }
    const unsubscribe = session.onEvent((e) => {
      if (e.type === "disconnected") resolve({ unreachable: true });
    });
    off = () => {
      unsubscribe();
    };
  });
  return { promise, dispose: () => off() };
}

/** Pipes `input` into the stdin stream; errors writing it after the command exited are ignored. */
function feedInput(input: NodeJS.ReadableStream, stdin: Duplex): { detach(): void } {
  // The command may exit, or close its stdin, before reading everything: the agent then resets
  // the stream, and what was not read has nowhere to go. That is not a failure of the call.
  stdin.on("error", () => {});
  // A local stdin that fails must not leave the command waiting for an end that never comes:
  // resetting the stream closes the command's stdin.
  const onError = (err: Error) => stdin.destroy(err);
  input.on("error", onError);
  input.pipe(stdin);
  return {
    detach() {
      input.unpipe(stdin);
      input.removeListener("error", onError);
    },
  };
}

/**
 * Copies one output stream into a borrowed writable, pausing the stream while the writable is
 * full. Resolves once the stream has ended and every write has been called back; rejects if the
 * stream fails (the call was cancelled or the session ended).
 */
function copyOutput(source: Duplex, dest: NodeJS.WritableStream, recycle: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let pendingWrites = 0;
    let ended = false;
    let settled = false;
    let destFailed = false;

    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      source.off("data", onData);
      source.off("end", onEnd);
      source.off("error", onSourceError);
      dest.removeListener("drain", onDrain);
      dest.removeListener("close", onDestClose);
      // A Writable calls back with its error first and emits it on a later tick: stay
      // listening until then, or that emit would be an uncaught exception.
      if (destFailed) setImmediate(() => dest.removeListener("error", onDestError));
      else dest.removeListener("error", onDestError);
      if (err === undefined) resolve();
      else reject(err);
    };
    const maybeDone = () => {
      if (ended && pendingWrites === 0) settle();
    };
    const onData = (chunk: Buffer) => {
      pendingWrites++;
      if (recycle) adopt(chunk);
      const below = dest.write(chunk, (err?: Error | null) => {
        pendingWrites--;
        if (err) {
          onDestError(err);
          return;
        }
        // Written: `dest` holds no reference any more (the caller said so with `recycle`).
        if (recycle) release(chunk);
        maybeDone();
      });
      if (!below) source.pause();
    };
    const onDrain = () => {
      if (!settled) source.resume();
    };
    const onEnd = () => {
      ended = true;
      // Our direction of the stream carries nothing: end it so the session can forget the stream.
      source.end();
      maybeDone();
    };
    const onSourceError = (err: Error) => settle(err);
    // Like a reader that closed its pipe: stop reading, and let the agent's command see it.
    const onDestError = (err: Error) => {
      if (settled) return;
      destFailed = true;
      source.destroy(err);
      settle();
    };
    const onDestClose = () => {
      if (!ended)
        onDestError(new Error("the output stream was closed before the command's output ended"));
    };

    // The stream errors when its call fails; the copy reports that, and nothing else may crash.
    source.on("error", () => {});
    source.on("error", onSourceError);
    source.on("data", onData);
    source.on("end", onEnd);
    dest.on("drain", onDrain);
    dest.on("error", onDestError);
    dest.on("close", onDestClose);
  });
}
