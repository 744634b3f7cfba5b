/**
 * The ends of a transfer on this host: where `getFile` writes (a temporary file renamed over the
 * target, a FIFO or device written through, or a stream such as stdout) and what `putFile`
 * reads (a regular file, or a stream such as stdin).
 */
import type { Hash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { type FileHandle, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { Readable, Writable } from "node:stream";
import type { CallOptions } from "../abort.ts";
import { type Destination, openThrough } from "../platform/file-destination.ts";
import {
  createTemp,
  isBaseName,
  openForReading,
  readChunks,
  syncFolder,
  writeAll,
} from "../platform/file-transfer.ts";

/** Where received bytes go on this side: a temporary file, a FIFO or device, or a stream. */
export interface Sink {
  /** What to name in messages ("-" for a stream). */
  readonly path: string;
  /** Set when bytes land where they are meant at once (no temporary file to drop). */
  readonly through: boolean;
  write(chunk: Buffer, position: number): Promise<void>;
  /** Makes the bytes final with `mode`; resolves with the mode the destination has. */
  finish(mode: number): Promise<number>;
  /** Drops what was written where that is possible (the temporary file). */
  abandon(): Promise<void>;
}

export async function replaceSink(target: string): Promise<Sink> {
  const temp = await createTemp(target);
  let closed = false;
  return {
    path: target,
    through: false,
    write: (chunk, position) => writeAll(temp.handle, chunk, position),
    async finish(mode) {
      await temp.handle.chmod(mode);
      await temp.handle.sync();
      closed = true;
      await temp.handle.close();
      await rename(temp.path, target);
      await syncFolder(dirname(target));
      return mode;
    },
    async abandon() {
      if (!closed) await temp.handle.close().catch(() => {});
      await rm(temp.path, { force: true }).catch(() => {});
    },
  };
}

export async function throughSink(
  destination: Extract<Destination, { kind: "through" }>,
  options: CallOptions,
): Promise<Sink> {
  const handle: FileHandle = await openThrough(destination, options.signal);
  let closed = false;
  return {
    path: destination.path,
    through: true,
    write: (chunk) => writeAll(handle, chunk, null),
    async finish() {
      if (destination.type === "block device") await handle.sync();
      closed = true;
      await handle.close();
      return (await stat(destination.path)).mode & 0o7777;
    },
    async abandon() {
      if (!closed) await handle.close().catch(() => {});
    },
  };
}

/** One of this process's open files (/dev/stdout is fd 1), written in order as a redirect is. */
export function openFileSink(fd: number, path: string): Sink {
  const out =
    fd === 1
      ? process.stdout
      : fd === 2
        ? process.stderr
        : createWriteStream("", { fd, autoClose: false });
  return streamSink(out, path);
}

export function streamSink(out: Writable, path = "-"): Sink {
  // Failures are seen through write's callback; without a listener an 'error' would crash us.
  const ignore = () => {};
  out.on("error", ignore);
  const write = (chunk: Buffer) =>
    new Promise<void>((done, fail) => {
      out.write(chunk, (err) => (err ? fail(err) : done()));
    });
  return {
    path,
    through: true,
    write,
    async finish(mode) {
      out.off("error", ignore);
      return mode;
    },
    async abandon() {
      out.off("error", ignore);
    },
  };
}

/** What a put reads from: a regular file (size and mode known) or a stream (stdin). */
export interface Source {
  path: string;
  size: number | undefined;
  mode: number | undefined;
  name: string | undefined;
  chunks(hash: Hash): AsyncGenerator<Buffer>;
  close(): Promise<void>;
}

export async function openSource(local: string | Readable): Promise<Source> {
  if (typeof local !== "string") {
    return {
      path: "-",
      size: undefined,
      mode: undefined,
      name: undefined,
      async *chunks(hash) {
        for await (const chunk of local as AsyncIterable<Buffer | string>) {
          const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
          hash.update(bytes);
          yield bytes;
        }
      },
      async close() {},
    };
  }
  const path = resolve(local);
  const { handle, size, mode } = await openForReading(path);
  return {
    path,
    size,
    mode,
    name: isBaseName(basename(path)) ? basename(path) : undefined,
    chunks: (hash) => readChunks(handle, path, hash, size),
    close: () => handle.close().catch(() => {}),
  };
}
