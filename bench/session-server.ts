/**
 * The far end of `session.bench.ts`, run as its own process (as a real agent is):
 *
 *   node --import tsx bench/session-server.ts [--lib DIR] SERVE...
 *
 * where each SERVE is one of
 *
 *   raw:PATH                          the bare-Node baseline
 *   guestlink:PATH[:STREAM:SESSION]   guestlink sessions, optionally with these window sizes
 *   source:PATH                       guestlink sessions from the TypeScript source (under tsx)
 *
 * `guestlink:` uses the compiled library in DIR (see `buildLibrary` in lib.ts) when `--lib` is
 * given, else the source. One process serves them all, so a baseline and the guestlink figure
 * beside it see the same process, thread and CPU placement. It prints one line "ready" to stdout
 * once listening everywhere, and exits when its stdin closes (so it never outlives the benchmark)
 * or on SIGTERM.
 *
 * `raw`: the first byte a client sends picks what its connection does:
 * - RAW_ECHO: every byte received is written straight back.
 * - RAW_FRAMED: messages framed as a 4-byte big-endian length and a payload; each one is parsed
 *   and answered with the same message, the answers to one read going out in one write.
 * - RAW_STREAM + 8-byte big-endian count: writes that many bytes in 64 KiB blocks, respecting
 *   backpressure, then ends the connection.
 *
 * guestlink sessions serve "echo" (returns its params) and "produce" (writes `params.bytes` bytes
 * on its "out" stream in 64 KiB blocks through `toDuplex`, respecting backpressure, and returns
 * the count).
 */
import { rm } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { toDuplex } from "../src/platform/duplex.ts";
import { openSession, serveSessions } from "../src/platform/session.ts";
import type { SessionStream } from "../src/session/stream.ts";

export const RAW_ECHO = 0x45; // "E"
export const RAW_FRAMED = 0x46; // "F"
export const RAW_STREAM = 0x53; // "S"
/** Blocks the producers write, on both the raw and the guestlink side. */
export const BLOCK_BYTES = 64 * 1024;
/** Length prefix of RAW_FRAMED messages. */
export const FRAME_PREFIX_BYTES = 4;

/** What the benchmark uses of guestlink: from the source, or from a compiled build. */
export interface GuestlinkLib {
  openSession: typeof openSession;
  serveSessions: typeof serveSessions;
  toDuplex: typeof toDuplex;
}

/** The TypeScript source, as tsx transforms it. */
export const SOURCE_LIB: GuestlinkLib = { openSession, serveSessions, toDuplex };

/** The build in `dir` (laid out as dist/ is). */
export async function loadLib(dir: string): Promise<GuestlinkLib> {
  const load = (path: string) => import(pathToFileURL(join(dir, path)).href);
  const session = (await load(
    "platform/session.js",
  )) as typeof import("../src/platform/session.ts");
  const duplex = (await load("platform/duplex.js")) as typeof import("../src/platform/duplex.ts");
  return {
    openSession: session.openSession,
    serveSessions: session.serveSessions,
    toDuplex: duplex.toDuplex,
  };
}

/** One 64 KiB block of a fixed pattern, written again and again (never modified). */
function patternBlock(): Buffer {
  const block = Buffer.alloc(BLOCK_BYTES);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  return block;
}

async function serveRaw(path: string): Promise<() => Promise<void>> {
  const block = patternBlock();
  const server = net.createServer((socket) => {
    let head = Buffer.alloc(0);
    socket.on("data", function request(chunk: Buffer) {
      head = Buffer.concat([head, chunk]);
      const mode = head[0];
      if (mode === RAW_STREAM && head.length < 9) return; // the count is still on its way
      socket.off("data", request);
      const rest = head.subarray(1);
      if (mode === RAW_ECHO) {
        if (rest.length > 0) socket.write(rest);
        socket.on("data", (more: Buffer) => socket.write(more));
      } else if (mode === RAW_FRAMED) {
        serveFramed(socket, rest);
      } else if (mode === RAW_STREAM) {
        stream(socket, block, Number(rest.readBigUInt64BE(0)));
      } else {
        socket.destroy(new Error(`unknown request ${mode}`));
      }
    });
    socket.on("error", () => {});
  });
  await rm(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ path }, () => resolve());
  });
  return async () => {
    server.close();
    await rm(path, { force: true });
  };
}

/** Parses length-prefixed messages and answers each with itself, one write per read. */
function serveFramed(socket: net.Socket, first: Buffer): void {
  let held: Buffer | undefined;
  const onData = (chunk: Buffer) => {
    const buf = held === undefined ? chunk : Buffer.concat([held, chunk]);
    const replies: Buffer[] = [];
    let at = 0;
    while (buf.length - at >= FRAME_PREFIX_BYTES) {
      const length = buf.readUInt32BE(at);
      const end = at + FRAME_PREFIX_BYTES + length;
      if (end > buf.length) break;
      replies.push(buf.subarray(at, end));
      at = end;
    }
    held = at < buf.length ? buf.subarray(at) : undefined;
    if (replies.length > 0) socket.write(Buffer.concat(replies));
  };
  if (first.length > 0) onData(first);
  socket.on("data", onData);
}

function stream(socket: net.Socket, block: Buffer, total: number): void {
  let left = total;
  const more = () => {
    while (left > 0) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!socket.write(n === block.length ? block : block.subarray(0, n))) {
        socket.once("drain", more);
        return;
      }
    }
    socket.end();
  };
  more();
}

/** Serves "echo" and "produce" at `address` (auth.bench.ts uses it for tcp:, with and without a key). */
export async function serveGuestlink(
  lib: GuestlinkLib,
  address: string,
  windows: { streamWindowBytes?: number; sessionWindowBytes?: number },
  listenOptions: { key?: Uint8Array } = {},
): Promise<() => Promise<void>> {
  const block = patternBlock();
  const server = await lib.serveSessions(
    address,
    (session) => {
      session
        .handle("echo", (params) => params)
        .handle("produce", async (params, ctx) => {
          const { bytes } = params as { bytes: number };
          const out = lib.toDuplex(ctx.streams.out as SessionStream);
          let left = bytes;
          while (left > 0) {
            const n = Math.min(left, block.length);
            left -= n;
            if (!out.write(n === block.length ? block : block.subarray(0, n))) {
              await new Promise((resolve) => out.once("drain", resolve));
            }
          }
          await new Promise<void>((resolve, reject) =>
            out.end((err?: Error | null) => (err ? reject(err) : resolve())),
          );
          return bytes;
        });
    },
    windows,
    listenOptions,
  );
  return () => server.close({ abort: true });
}

function positiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer: ${text}`);
  return n;
}

const USAGE =
  "usage: session-server.ts [--lib DIR] (raw:PATH | guestlink:PATH[:STREAM:SESSION] | source:PATH)...";

async function main(argv: readonly string[]): Promise<void> {
  let args = [...argv];
  let lib = SOURCE_LIB;
  if (args[0] === "--lib" && args[1] !== undefined) {
    lib = await loadLib(args[1]);
    args = args.slice(2);
  }
  if (args.length === 0) throw new Error(USAGE);
  const stops = await Promise.all(
    args.map((spec) => {
      const [kind, path, stream, session] = spec.split(":");
      if (!path) throw new Error(`${spec}: no path (${USAGE})`);
      if (kind === "raw") return serveRaw(path);
      if (kind === "source") return serveGuestlink(SOURCE_LIB, `unix:${path}`, {});
      if (kind === "guestlink") {
        const windows =
          stream === undefined
            ? {}
            : {
                streamWindowBytes: positiveInt(stream),
                sessionWindowBytes: positiveInt(session ?? stream),
              };
        return serveGuestlink(lib, `unix:${path}`, windows);
      }
      throw new Error(`${spec}: unknown kind (${USAGE})`);
    }),
  );
  serveUntilStdinEnds(stops);
}

/**
 * Says "ready" on stdout, then runs until stdin closes (the benchmark went away) or SIGTERM,
 * calling every `stops` before exiting 0.
 */
export function serveUntilStdinEnds(stops: readonly (() => Promise<unknown>)[]): void {
  const exit = () => {
    Promise.allSettled(stops.map((stop) => stop())).finally(() => process.exit(0));
  };
  process.stdin.on("end", exit);
  process.stdin.on("error", exit);
  process.stdin.resume();
  process.once("SIGTERM", exit);
  process.stdout.write("ready\n");
}

// Run only as a script: the benchmark imports the constants and loaders above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(
      `session-server: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  });
}
