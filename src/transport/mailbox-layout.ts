/**
 * What a mailbox folder holds on disk, and the few file operations both sides use on it. The
 * folder is the only channel between the two sides (NFS, virtiofs, 9p), so every name is written
 * exactly once, by one side, and appears complete: a file is written under a temporary name,
 * fsynced, and renamed into place. Nothing is ever read in the hope that it is read before it is
 * rewritten.
 *
 * ```
 * FOLDER/
 *   listener.lock            the listening side's pid, host and boot id (one listener per folder)
 *   c-<id>/                  one connection, announced by renaming a prepared `.c-<id>.tmp`
 *     hello                  who connected (for people; nothing reads it)
 *     c2l/                   connector → listener: written by the connector, emptied by the listener
 *       alive                the connector's heartbeat: its mtime is touched, its content never read
 *       0000000000000001     sequenced files: a 16-byte header, then the bytes (or an end marker)
 *       broken               the connector aborted: why, as JSON
 *     l2c/                   listener → connector, the same, plus
 *       accepted             the listener took the connection (its incarnation, as JSON)
 * ```
 */
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { lstat, open, readdir, rename, rm, unlink } from "node:fs/promises";
import { join } from "node:path";

export const LOCK_FILE = "listener.lock";
export const CONNECTION_PREFIX = "c-";
export const PREPARING_PREFIX = ".c-";
export const PREPARING_SUFFIX = ".tmp";
/** A connection folder's name: ours alone, so the listener never touches anything else. */
export const CONNECTION_NAME = /^c-[A-Za-z0-9_-]{16}$/;
export const CONNECTOR_TO_LISTENER = "c2l";
export const LISTENER_TO_CONNECTOR = "l2c";
export const ALIVE_FILE = "alive";
export const BROKEN_FILE = "broken";
export const ACCEPTED_FILE = "accepted";
export const HELLO_FILE = "hello";

/** A sequenced file: "GLMB", version, type, 2 reserved bytes, payload length, low 32 bits of seq. */
export const HEADER_BYTES = 16;
const MAGIC = [0x47, 0x4c, 0x4d, 0x42];
const FORMAT_VERSION = 1;

export const FileType = { DATA: 1, END: 2 } as const;
export type FileType = (typeof FileType)[keyof typeof FileType];

/** Sequence numbers as fixed-width decimal, so names sort in order and never repeat. */
export function seqName(seq: number): string {
  return String(seq).padStart(16, "0");
}

export function encodeHeader(type: FileType, seq: number, payloadBytes: number): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  header.set(MAGIC, 0);
  header[4] = FORMAT_VERSION;
  header[5] = type;
  const view = new DataView(header.buffer);
  view.setUint32(8, payloadBytes);
  view.setUint32(12, seq >>> 0);
  return header;
}

export type DecodedFile =
  | { readonly kind: "file"; readonly type: FileType; readonly payload: Uint8Array }
  /** Shorter than its header says: not all of it is visible yet (a cache), or it was cut. */
  | { readonly kind: "short" }
  | { readonly kind: "bad"; readonly problem: string };

/** Checks a sequenced file read whole: its header, that it is the file expected, its length. */
export function decodeFile(bytes: Uint8Array, seq: number): DecodedFile {
  if (bytes.length < HEADER_BYTES) return { kind: "short" };
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) return { kind: "bad", problem: "it does not start with GLMB" };
  }
  if (bytes[4] !== FORMAT_VERSION) {
    return { kind: "bad", problem: `it has format version ${bytes[4]}, not ${FORMAT_VERSION}` };
  }
  const type = bytes[5];
  if (type !== FileType.DATA && type !== FileType.END) {
    return { kind: "bad", problem: `it has an unknown type ${type}` };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(12) !== seq >>> 0) {
    return { kind: "bad", problem: `its header names sequence number ${view.getUint32(12)}` };
  }
  const length = view.getUint32(8);
  if (type === FileType.END && length !== 0) {
    return { kind: "bad", problem: "it is an end marker with a payload" };
  }
  if (bytes.length < HEADER_BYTES + length) return { kind: "short" };
  if (bytes.length > HEADER_BYTES + length) {
    return { kind: "bad", problem: "it is longer than its header says" };
  }
  return { kind: "file", type, payload: bytes.subarray(HEADER_BYTES) };
}

/** Gathering many small chunks into one buffer costs less than one iovec each. */
const GATHER_ABOVE_CHUNKS = 16;

/**
 * Writes `chunks` to `dir/name` so that the name appears only with all of its bytes: a temporary
 * name (never reused: `.tmp-` plus the name and a random suffix), write, optionally fsync, rename.
 * Every final name here has exactly one writer, who writes it once.
 */
export async function writeAtomically(
  dir: string,
  name: string,
  chunks: readonly Uint8Array[],
  fsync: boolean,
): Promise<void> {
  const temporary = join(dir, `.tmp-${name}-${randomBytes(4).toString("hex")}`);
  const buffers = chunks.length > GATHER_ABOVE_CHUNKS ? [Buffer.concat(chunks)] : chunks;
  const handle = await open(temporary, "wx");
  try {
    try {
      let pending: readonly Uint8Array[] = buffers;
      let left = pending.reduce((n, c) => n + c.length, 0);
      while (left > 0) {
        const { bytesWritten } = await handle.writev(pending as Uint8Array[]);
        left -= bytesWritten;
        if (left > 0) pending = skipBytes(pending, bytesWritten);
      }
      if (fsync) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, join(dir, name));
  } catch (err) {
    await unlink(temporary).catch(() => {});
    throw err;
  }
}

function skipBytes(chunks: readonly Uint8Array[], bytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = bytes;
  for (const c of chunks) {
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    out.push(skip > 0 ? c.subarray(skip) : c);
    skip = 0;
  }
  return out;
}

/** Makes a rename in `dir` durable where the filesystem allows opening a folder to fsync it. */
export async function fsyncFolder(dir: string): Promise<void> {
  try {
    const handle = await open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Some filesystems (and platforms) cannot fsync a folder; the rename is still atomic.
  }
}

/** The errno-style code of a failed file operation. */
export function fsCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Whether `path` exists (anything other than ENOENT is thrown). */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (fsCode(err) === "ENOENT" || fsCode(err) === "ENOTDIR") return false;
    throw err;
  }
}

/** The most a marker file (`broken`, the lock) may hold: it is a line of JSON. */
export const MAX_MARKER_BYTES = 64 * 1024;

/** A file in the folder is not what guestlink writes there: the other side broke it, or an attacker. */
export class UnexpectedFileError extends Error {}

/**
 * Opening never follows a symlink, never blocks on a FIFO, and reads at most `maxBytes`: the other
 * side of the folder may be hostile, and must not make us read /dev/zero or a file of ours.
 */
const OPEN_FLAGS =
  fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0);

/** A regular file's bytes (at most `maxBytes`), or undefined when it does not exist. */
export async function readBounded(path: string, maxBytes: number): Promise<Buffer | undefined> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, OPEN_FLAGS);
  } catch (err) {
    const code = fsCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    if (code === "ELOOP") throw new UnexpectedFileError("it is a symbolic link");
    throw err;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new UnexpectedFileError("it is not a regular file");
    if (stat.size > maxBytes) {
      throw new UnexpectedFileError(`it is ${stat.size} bytes, more than the ${maxBytes} allowed`);
    }
    const bytes = Buffer.allocUnsafe(stat.size);
    let at = 0;
    while (at < bytes.length) {
      const { bytesRead } = await handle.read(bytes, at, bytes.length - at, at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return at === bytes.length ? bytes : bytes.subarray(0, at);
  } finally {
    await handle.close();
  }
}

/** A marker file's text, or undefined when it does not exist. */
export async function readMarker(path: string): Promise<string | undefined> {
  return (await readBounded(path, MAX_MARKER_BYTES))?.toString("utf8");
}

/**
 * Removes a connection folder and everything in it; never fails (it may already be gone). The
 * sequenced files and markers go first and the `alive` files last, so a peer that finds our
 * heartbeat gone also finds every file of its own gone: whoever removes the folder after a clean
 * close never makes the other side, still looking, take the removal for an abort.
 */
export async function removeFolder(path: string): Promise<void> {
  for (const direction of [CONNECTOR_TO_LISTENER, LISTENER_TO_CONNECTOR]) {
    const dir = join(path, direction);
    const names = await readdir(dir).catch(() => [] as string[]);
    await Promise.all(
      names
        .filter((name) => name !== ALIVE_FILE)
        .map((name) => unlink(join(dir, name)).catch(() => {})),
    );
  }
  await rm(path, { recursive: true, force: true, maxRetries: 2 }).catch(() => {});
}

/** The reason a `broken` marker gives, or a generic one if it cannot be read as ours. */
export function brokenReason(text: string): string {
  try {
    const parsed = JSON.parse(text) as { reason?: unknown };
    if (typeof parsed.reason === "string") return parsed.reason;
  } catch {
    // not JSON: say so below
  }
  return "it left a broken marker";
}
