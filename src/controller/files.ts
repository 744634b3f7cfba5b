/**
 * The host's side of file transfers with an agent's files service. Both directions hash what
 * they move and compare with the agent's sha256 before anything replaces a file, and both write
 * atomically: a temporary file is renamed over the target only once the bytes check out. What is
 * not a regular file is never replaced (see `resolveDestination`): a FIFO or device is written
 * through, a symlink is followed, a folder gets the file under the source's base name.
 *
 * Failures about a file say on which side it is: "on this host: …" or "in the agent ID: …"
 * (and `details.side`, "local" or "remote").
 *
 * The agent is untrusted input: its results are validated, and the mode it reports for a file is
 * applied without setuid, setgid or sticky bits.
 */
import { createHash } from "node:crypto";
import { basename, posix } from "node:path";
import type { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as v from "valibot";
import type { CallOptions } from "../abort.ts";
import { type ErrorCode, GuestlinkError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import { resolveDestination } from "../platform/file-destination.ts";
import {
  asError,
  fileSystemError,
  isBaseName,
  ModeSchema,
  Sha256Schema,
  SizeSchema,
} from "../platform/file-transfer.ts";
import { RemoteError } from "../session/call.ts";
import type { OpenCall, Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";
import {
  openFileSink,
  openSource,
  replaceSink,
  type Sink,
  type Source,
  streamSink,
  throughSink,
} from "./file-ends.ts";
import { checkReply } from "./reply.ts";

export interface TransferOptions extends CallOptions {
  /** Called as bytes move: bytes so far, and the total when it is known (put). */
  onProgress?: (bytes: number, total?: number) => void;
  /** Follow a symlink at the destination (default), or replace the link itself. */
  follow?: boolean;
  /**
   * When the destination is a folder, copy into it under the source's base name (default), or
   * fail with IS_A_DIRECTORY (what a copy of a folder wants for the files inside it).
   */
  intoFolder?: boolean;
}

export interface TransferResult {
  size: number;
  /** Hex sha256 of the bytes, computed on both sides. */
  sha256: string;
  /** Permission bits of the file written (of the FIFO or device, when written through). */
  mode: number;
  /** Where the bytes went: the file replaced or written through (absolute), or "-" for a stream. */
  path: string;
}

/** Bits a file fetched from an untrusted agent may carry: read, write and execute only. */
const FETCHED_MODE_MASK = 0o777;

const GetResult = v.object({ size: SizeSchema, sha256: Sha256Schema, mode: ModeSchema });
const PutResult = v.object({ token: v.string(), size: SizeSchema, sha256: Sha256Schema });
const CommitResult = v.object({
  path: v.string(),
  size: SizeSchema,
  sha256: Sha256Schema,
  mode: ModeSchema,
});

/** Codes of failures about one file, which say on which side the file is. */
const FILE_CODES: ReadonlySet<ErrorCode> = new Set([
  "FILE_NOT_FOUND",
  "PERMISSION_DENIED",
  "IS_A_DIRECTORY",
  "NOT_A_DIRECTORY",
  "UNSUPPORTED_FILE_TYPE",
  "NO_SPACE",
  "FILE_CHANGED",
  "PATH_OUTSIDE_ROOT",
]);

/**
 * `err` with the side of the file it is about in its message and `details.side`: an error the
 * agent sent is about its file, any other about ours.
 */
export function withSide(err: unknown, session: Session): unknown {
  if (!isGuestlinkError(err) || !FILE_CODES.has(err.code)) return err;
  if (err.details?.side !== undefined) return err;
  const local = err;
  const remote = err instanceof RemoteError;
  const agent = session.peer?.id ?? "?";
  return new GuestlinkError(
    local.code,
    `${remote ? `in the agent ${agent}` : "on this host"}: ${local.message}`,
    {
      cause: local,
      details: {
        ...local.details,
        side: remote ? "remote" : "local",
        ...(remote ? { agent } : {}),
      },
    },
  );
}

function checksumMismatch(
  path: string,
  ours: string,
  theirs: string,
  size: number,
  theirSize: number,
  writtenThrough?: string,
) {
  const outcome =
    writtenThrough === undefined
      ? "nothing was written in place of the target"
      : `the bytes were already written through to ${writtenThrough}, which holds what arrived`;
  return new GuestlinkError(
    "CHECKSUM_MISMATCH",
    `${path}: ${size} bytes with sha256 ${ours} were transferred, the agent reports ${theirSize} bytes with sha256 ${theirs}; ${outcome}`,
    { details: { path, sha256: ours, remoteSha256: theirs, size, remoteSize: theirSize } },
  );
}

/**
 * Settles a call whose stream carries the bytes, picking the error that says what went wrong:
 * a local failure (disk, source file, progress callback) first, as the call was cancelled
 * because of it; then the agent's error; then the stream's own. A result that arrives before
 * the bytes have all moved (`complete()` false) is a broken agent, not a finished transfer.
 */
async function settleTransfer(
  call: OpenCall,
  stream: SessionStream,
  moving: Promise<void>,
  local: { error?: unknown },
  complete: () => boolean,
): Promise<unknown> {
  const streamError = moving.then(
    () => undefined,
    (err: unknown) => {
      if (local.error !== undefined) call.cancel("the transfer failed on this side");
      return err;
    },
  );
  let value: unknown;
  let remoteError: unknown;
  try {
    value = await call.result;
    if (!complete()) {
      const message = "the agent answered before the data stream was complete";
      stream.reset("BAD_RESULT", message);
      remoteError = new GuestlinkError("BAD_RESULT", message, {
        details: { problems: ["result before the end of the data stream"] },
      });
    }
  } catch (err) {
    remoteError = err ?? new GuestlinkError("CANCELLED", "the call failed");
  }
  const moved = await streamError;
  if (local.error !== undefined) throw local.error;
  if (remoteError !== undefined) throw remoteError;
  if (moved !== undefined) throw moved;
  return value;
}

/** The base name a copy into a folder takes from `path` (a POSIX path in the agent, or ours). */
function baseNameOf(path: string, remote: boolean): string | undefined {
  const name = (remote ? posix.basename : basename)(path);
  return isBaseName(name) ? name : undefined;
}

/**
 * The error a transfer cancelled through `signal` fails with: CANCELLED, saying what became of
 * the destination, which is the user's next question.
 */
function cancelled(signal: CallOptions["signal"], outcome: string, path: string): GuestlinkError {
  const reason = asError(signal?.reason);
  return new GuestlinkError("CANCELLED", `${reason.message}; ${outcome}`, {
    cause: reason,
    details: { path },
  });
}

/**
 * Copies `remotePath` from the agent to `local`. A path is written as `resolveDestination` says:
 * a regular file (or none) through a temporary file next to it, hashed, compared with the
 * agent's sha256, given the agent's mode, then renamed into place; a FIFO or device written
 * through. A stream (stdout) gets the bytes as they come. Relative remote paths are relative to
 * the agent's working folder.
 */
export async function getFile(
  session: Session,
  remotePath: string,
  local: string | Writable,
  options: TransferOptions = {},
): Promise<TransferResult> {
  let sink: Sink | undefined;
  try {
    if (typeof local === "string") {
      const destination = await resolveDestination(local, {
        name: options.intoFolder === false ? undefined : baseNameOf(remotePath, true),
        follow: options.follow,
        // /dev/stdout here is the caller's own stdout: written to, as a redirect would.
        ownFiles: true,
      });
      sink =
        destination.kind === "replace"
          ? await replaceSink(destination.path)
          : destination.kind === "through"
            ? await throughSink(destination, options)
            : openFileSink(destination.fd, destination.path);
    } else {
      sink = streamSink(local);
    }
    return await receive(session, remotePath, sink, options);
  } catch (err) {
    await sink?.abandon();
    if (options.signal?.aborted && sink !== undefined) {
      throw cancelled(
        options.signal,
        sink.through
          ? `what had arrived was already written to ${sink.path}`
          : `${sink.path} was left as it was and the partial copy was removed`,
        sink.path,
      );
    }
    throw withSide(sink === undefined ? err : fileSystemError(err, sink.path), session);
  }
}

async function receive(
  session: Session,
  remotePath: string,
  sink: Sink,
  options: TransferOptions,
): Promise<TransferResult> {
  let call: OpenCall | undefined;
  try {
    call = session.open(
      "files.get",
      { path: remotePath },
      // A transfer takes as long as its size needs; keepalive catches a dead agent.
      { streams: ["data"], signal: options.signal, deadline: options.deadline ?? Infinity },
    );
    const stream = call.streams.data as SessionStream;
    const data = toDuplex(stream);
    data.end(); // nothing flows towards the agent
    const hash = createHash("sha256");
    let received = 0;
    const local: { error?: unknown } = {};
    const receiving = (async () => {
      for await (const chunk of data as AsyncIterable<Buffer>) {
        hash.update(chunk);
        try {
          await sink.write(chunk, received);
          received += chunk.length;
          options.onProgress?.(received);
        } catch (err) {
          local.error = fileSystemError(err, sink.path);
          throw err;
        }
      }
    })();
    const result = checkReply(
      "files.get",
      GetResult,
      await settleTransfer(call, stream, receiving, local, () => stream.remoteEnded),
    );
    const sha256 = hash.digest("hex");
    if (result.sha256 !== sha256 || result.size !== received) {
      throw checksumMismatch(
        remotePath,
        sha256,
        result.sha256,
        received,
        result.size,
        sink.through ? sink.path : undefined,
      );
    }
    const mode = await sink.finish(result.mode & FETCHED_MODE_MASK);
    return { size: received, sha256, mode, path: sink.path };
  } catch (err) {
    call?.cancel("the transfer failed");
    throw err;
  }
}

/**
 * Copies `local` (a file here, or a stream such as stdin) to `remotePath` in the agent, keeping
 * a file's mode: streamed into a temporary file there, then committed (renamed into place) only
 * if the agent's sha256 equals ours. The agent decides what its destination means the way
 * `getFile` does here (a folder gets the file under its base name, a FIFO or device is written
 * through, a symlink followed unless `follow: false`).
 */
export async function putFile(
  session: Session,
  local: string | Readable,
  remotePath: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  let source: Source | undefined;
  try {
    source = await openSource(local);
    return await send(session, source, remotePath, options);
  } catch (err) {
    if (options.signal?.aborted) {
      throw cancelled(
        options.signal,
        `${remotePath} in the agent was not replaced and its partial copy is deleted there`,
        remotePath,
      );
    }
    throw withSide(err, session);
  } finally {
    await source?.close();
  }
}

async function send(
  session: Session,
  source: Source,
  remotePath: string,
  options: TransferOptions,
): Promise<TransferResult> {
  const params: Record<string, unknown> = { path: remotePath };
  if (source.mode !== undefined) params.mode = source.mode;
  if (source.size !== undefined) params.size = source.size;
  if (source.name !== undefined && options.intoFolder !== false) params.name = source.name;
  if (options.follow === false) params.follow = false;
  const call = session.open("files.put", params, {
    streams: ["data"],
    signal: options.signal,
    deadline: options.deadline ?? Infinity,
  });
  const stream = call.streams.data as SessionStream;
  const data = toDuplex(stream);
  const hash = createHash("sha256");
  let sent = 0;
  const local: { error?: unknown } = {};
  const sending = pipeline(async function* () {
    try {
      for await (const chunk of source.chunks(hash)) {
        sent += chunk.length;
        options.onProgress?.(sent, source.size);
        yield chunk;
      }
    } catch (err) {
      local.error = fileSystemError(err, source.path);
      throw err;
    }
  }, data);
  const result = checkReply(
    "files.put",
    PutResult,
    await settleTransfer(call, stream, sending, local, () => stream.outputDone),
  );
  const token = result.token;
  const sha256 = hash.digest("hex");
  if (result.sha256 !== sha256 || result.size !== sent) {
    discard(session, token);
    throw checksumMismatch(remotePath, sha256, result.sha256, sent, result.size);
  }
  try {
    const committed = checkReply(
      "files.commit",
      CommitResult,
      await session.call(
        "files.commit",
        { token, sha256 },
        { signal: options.signal, deadline: options.deadline },
      ),
    );
    return {
      size: committed.size,
      sha256: committed.sha256,
      mode: committed.mode,
      path: committed.path,
    };
  } catch (err) {
    discard(session, token);
    throw err;
  }
}

/**
 * Lets an upload go now rather than at its expiry, without waiting: the caller is already
 * failing, and the agent deletes it anyway when the session ends.
 */
function discard(session: Session, token: string): void {
  session.call("files.discard", { token }).catch(() => {});
}
