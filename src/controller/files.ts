/**
 * The host's side of file transfers with an agent's files service. Both directions hash what
 * they move and compare with the agent's sha256 before anything replaces a file, and both write
 * atomically: a temporary file is renamed over the target only once the bytes check out.
 *
 * The agent is untrusted input: its results are validated, and the mode it reports for a file is
 * applied without setuid, setgid or sticky bits.
 */
import { createHash } from "node:crypto";
import { rename, rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import * as v from "valibot";
import type { CallOptions } from "../abort.ts";
import { GuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import {
  createTemp,
  fileSystemError,
  ModeSchema,
  openForReading,
  readChunks,
  refuseFolder,
  Sha256Schema,
  SizeSchema,
  syncFolder,
  writeAll,
} from "../platform/file-transfer.ts";
import type { OpenCall, Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";

export interface TransferOptions extends CallOptions {
  /** Called as bytes move: bytes so far, and the total when it is known (put). */
  onProgress?: (bytes: number, total?: number) => void;
}

export interface TransferResult {
  size: number;
  /** Hex sha256 of the bytes, computed on both sides. */
  sha256: string;
  /** Permission bits of the file written. */
  mode: number;
}

/** Bits a file fetched from an untrusted agent may carry: read, write and execute only. */
const FETCHED_MODE_MASK = 0o777;

const GetResult = v.object({ size: SizeSchema, sha256: Sha256Schema, mode: ModeSchema });
const PutResult = v.object({ token: v.string(), size: SizeSchema, sha256: Sha256Schema });
const CommitResult = v.object({ size: SizeSchema, sha256: Sha256Schema, mode: ModeSchema });

function checkResult<S extends v.GenericSchema>(
  method: string,
  schema: S,
  value: unknown,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, value);
  if (parsed.success) return parsed.output;
  throw new GuestlinkError(
    "BAD_RESULT",
    `the agent's result for ${method} is malformed: ${v.summarize(parsed.issues)}`,
    { details: { method, problems: parsed.issues.map((issue) => issue.message) } },
  );
}

function checksumMismatch(
  path: string,
  ours: string,
  theirs: string,
  size: number,
  theirSize: number,
) {
  return new GuestlinkError(
    "CHECKSUM_MISMATCH",
    `${path}: ${size} bytes with sha256 ${ours} were transferred, the agent reports ${theirSize} bytes with sha256 ${theirs}; nothing was written in place of the target`,
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

/**
 * Copies `remotePath` from the agent to `localPath`: received into a temporary file next to it,
 * hashed, compared with the agent's sha256, given the agent's mode, then renamed into place.
 */
export async function getFile(
  session: Session,
  remotePath: string,
  localPath: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const target = resolve(localPath);
  await refuseFolder(target);
  const temp = await createTemp(target);
  let closed = false;
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
          await writeAll(temp.handle, chunk, received);
          received += chunk.length;
          options.onProgress?.(received);
        } catch (err) {
          local.error = fileSystemError(err, target);
          throw err;
        }
      }
    })();
    const result = checkResult(
      "files.get",
      GetResult,
      await settleTransfer(call, stream, receiving, local, () => stream.remoteEnded),
    );
    const sha256 = hash.digest("hex");
    if (result.sha256 !== sha256 || result.size !== received) {
      throw checksumMismatch(remotePath, sha256, result.sha256, received, result.size);
    }
    const mode = result.mode & FETCHED_MODE_MASK;
    await temp.handle.chmod(mode);
    await temp.handle.sync();
    closed = true;
    await temp.handle.close();
    await rename(temp.path, target);
    await syncFolder(dirname(target));
    return { size: received, sha256, mode };
  } catch (err) {
    call?.cancel("the transfer failed");
    if (!closed) await temp.handle.close().catch(() => {});
    await rm(temp.path, { force: true }).catch(() => {});
    throw fileSystemError(err, target);
  }
}

/**
 * Copies `localPath` to `remotePath` in the agent, keeping its mode: streamed into a temporary
 * file there, then committed (renamed into place) only if the agent's sha256 equals ours.
 */
export async function putFile(
  session: Session,
  localPath: string,
  remotePath: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const source = resolve(localPath);
  const { handle, size: total, mode } = await openForReading(source);
  let token: string;
  let sha256: string;
  try {
    const call = session.open(
      "files.put",
      { path: remotePath, mode, size: total },
      { streams: ["data"], signal: options.signal, deadline: options.deadline ?? Infinity },
    );
    const stream = call.streams.data as SessionStream;
    const data = toDuplex(stream);
    const hash = createHash("sha256");
    let sent = 0;
    const local: { error?: unknown } = {};
    const sending = pipeline(async function* () {
      try {
        for await (const chunk of readChunks(handle, source, hash, total)) {
          sent += chunk.length;
          options.onProgress?.(sent, total);
          yield chunk;
        }
      } catch (err) {
        local.error = fileSystemError(err, source);
        throw err;
      }
    }, data);
    const result = checkResult(
      "files.put",
      PutResult,
      await settleTransfer(call, stream, sending, local, () => stream.outputDone),
    );
    token = result.token;
    sha256 = hash.digest("hex");
    if (result.sha256 !== sha256 || result.size !== sent) {
      discard(session, token);
      throw checksumMismatch(remotePath, sha256, result.sha256, sent, result.size);
    }
  } finally {
    await handle.close().catch(() => {});
  }
  try {
    const committed = checkResult(
      "files.commit",
      CommitResult,
      await session.call(
        "files.commit",
        { token, sha256 },
        { signal: options.signal, deadline: options.deadline },
      ),
    );
    return { size: committed.size, sha256: committed.sha256, mode: committed.mode };
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
