/**
 * An emulator of Firecracker's host-side vsock handshake (Firecracker's docs/vsock.md and its
 * `unix/muxer.rs`), for testing `fc:` without a VM. It is not Firecracker: only the behaviour
 * the host sees is reproduced.
 *
 * - It listens on UDS_PATH. A host connection sends `CONNECT <port>\n` (Firecracker reads up to
 *   32 bytes, takes the first word case-insensitively and the port as a u32); anything else, and
 *   the emulator closes the connection.
 * - The "guest" serves port P on a Unix socket (`guest.set(P, path)`). When nothing listens
 *   there, the host connection is closed, as Firecracker does when the guest answers RST.
 *   Otherwise the emulator answers `OK <host port>\n` (numbers from 2^30 up, as Firecracker
 *   hands out) and splices both ways, half-closes included. With `coalesceOk`, OK goes out in
 *   one write with the guest's first bytes, as happens when the guest speaks at once.
 * - `guestConnect(P)` is a guest connecting to the host's (CID 2) port P: the emulator connects
 *   to `UDS_PATH_P`. `forwardGuestConnections(P, path)` does that for each connection to `path`.
 *
 * By hand: npx tsx test/helpers/fc-emulator.ts UDS_PATH [GUEST_PORT=unix:PATH]... [--to-host HOST_PORT=unix:PATH]...
 */
import { EventEmitter, once } from "node:events";
import net from "node:net";
import { pathToFileURL } from "node:url";

/** Firecracker reads at most this much of a CONNECT line. */
const MAX_CONNECT_LINE_BYTES = 32;
/** Host-side ports of host-initiated connections start here (Firecracker's `1 << 30`). */
const FIRST_HOST_PORT = 2 ** 30;

export interface FcEmulatorOptions {
  /** Where Firecracker would listen: the vsock device's uds_path. */
  udsPath: string;
  /** Guest port → the Unix socket where the guest serves it. Mutable after start (`emulator.guest`). */
  guest?: Iterable<readonly [number, string]>;
  /** Send OK in the same write as the guest's first bytes. */
  coalesceOk?: boolean;
  /** Answer a valid CONNECT with these bytes instead, then close: a broken or foreign peer. */
  reply?: string | Uint8Array;
  /** A line about each thing that happens (the CLI prints them). */
  log?: (line: string) => void;
}

export class FcEmulator extends EventEmitter {
  readonly udsPath: string;
  readonly guest: Map<number, string>;
  /** Host connections closed because nothing listened on the guest port. */
  refused = 0;
  /** Host connections closed because their CONNECT line was malformed. */
  malformed = 0;
  /** Host connections answered OK. */
  connected = 0;
  readonly #options: FcEmulatorOptions;
  readonly #servers = new Set<net.Server>();
  readonly #sockets = new Set<net.Socket>();
  #nextHostPort = FIRST_HOST_PORT;

  private constructor(options: FcEmulatorOptions) {
    super();
    this.udsPath = options.udsPath;
    this.guest = new Map(options.guest ?? []);
    this.#options = options;
  }

  static async start(options: FcEmulatorOptions): Promise<FcEmulator> {
    const emulator = new FcEmulator(options);
    await emulator.#listen(options.udsPath, (socket) => emulator.#onHost(socket));
    return emulator;
  }

  /** Resolves once `count` host connections in all were refused. */
  async refusals(count: number): Promise<void> {
    while (this.refused < count) await once(this, "refused");
  }

  /** A guest's connection to host port `port`: the guest's end, once Firecracker's is connected. */
  guestConnect(port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = this.#track(
        net.connect({ path: `${this.udsPath}_${port}`, allowHalfOpen: true }),
      );
      socket.once("connect", () => {
        socket.off("error", reject);
        this.#log(`guest connects to host port ${port}: connected to ${this.udsPath}_${port}`);
        resolve(socket);
      });
      socket.once("error", (err) => {
        this.#log(`guest connects to host port ${port}: ${err.message} (the guest gets RST)`);
        reject(err);
      });
    });
  }

  /** Stands in for a guest program connecting to (CID 2, `port`): each connection to `path` goes there. */
  async forwardGuestConnections(port: number, path: string): Promise<void> {
    await this.#listen(path, (guestSide) => {
      guestSide.on("error", () => {});
      this.guestConnect(port).then(
        (hostSide) => splice(guestSide, hostSide),
        () => guestSide.destroy(),
      );
    });
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(
      [...this.#servers].map(
        (server) => new Promise<void>((resolve) => server.close(() => resolve())),
      ),
    );
  }

  async #listen(path: string, onConnection: (socket: net.Socket) => void): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) =>
      onConnection(this.#track(socket)),
    );
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.#servers.add(server);
  }

  #track(socket: net.Socket): net.Socket {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    return socket;
  }

  #log(line: string): void {
    this.#options.log?.(line);
  }

  #onHost(host: net.Socket): void {
    host.on("error", () => {});
    let line: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const newline = line.indexOf(0x0a);
      if (newline < 0 && line.length < MAX_CONNECT_LINE_BYTES) return;
      host.off("data", onData);
      host.pause();
      const end = newline < 0 ? line.length : newline + 1;
      const rest = line.subarray(end);
      const port = parseConnect(line.subarray(0, end));
      if (port === undefined) {
        this.malformed++;
        this.#log(`malformed request ${JSON.stringify(line.subarray(0, end).toString())}: closed`);
        host.destroy();
        return;
      }
      if (this.#options.reply !== undefined) {
        this.#log(`CONNECT ${port}: answering with the configured reply`);
        host.end(this.#options.reply);
        return;
      }
      this.#toGuest(host, port, rest);
    };
    host.on("data", onData);
  }

  #toGuest(host: net.Socket, port: number, early: Buffer): void {
    const path = this.guest.get(port);
    const refuse = (why: string) => {
      this.refused++;
      this.#log(`CONNECT ${port}: nothing listens on guest port ${port} (${why}): closed`);
      host.destroy();
      this.emit("refused", this.refused);
    };
    if (path === undefined) {
      refuse("no such port");
      return;
    }
    const guest = this.#track(net.connect({ path, allowHalfOpen: true }));
    guest.once("error", (err) => refuse(err.message));
    guest.once("connect", () => {
      guest.removeAllListeners("error");
      guest.on("error", () => host.destroy());
      const ok = Buffer.from(`OK ${this.#nextHostPort++}\n`);
      this.connected++;
      this.#log(`CONNECT ${port}: ${ok.toString().trim()}, spliced to ${path}`);
      // Bytes the host sent after its CONNECT line are the guest's.
      if (early.length > 0) guest.write(early);
      if (this.#options.coalesceOk) {
        const first = (bytes?: Buffer) => {
          guest.off("data", first);
          guest.off("end", first);
          guest.pause();
          host.write(Buffer.concat([ok, bytes ?? Buffer.alloc(0)]));
          splice(host, guest);
        };
        guest.on("data", first);
        guest.on("end", first);
      } else {
        host.write(ok);
        splice(host, guest);
      }
    });
  }
}

/** Firecracker's parse: the first word is "connect" in any case, the second a u32. */
function parseConnect(line: Buffer): number | undefined {
  if (!line.includes(0x0a)) return undefined;
  const words = line.toString("utf8").trim().split(/\s+/);
  if (words.length < 2 || words[0]?.toLowerCase() !== "connect") return undefined;
  const port = words[1] as string;
  if (!/^\d+$/.test(port) || Number(port) > 0xffffffff) return undefined;
  return Number(port);
}

/** Both ways, ends passed on; when either side breaks, both are closed. */
function splice(a: net.Socket, b: net.Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
}

async function main(argv: string[]): Promise<void> {
  const usage =
    "usage: fc-emulator.ts UDS_PATH [GUEST_PORT=unix:PATH]... [--to-host HOST_PORT=unix:PATH]...";
  const [udsPath, ...rest] = argv;
  if (udsPath === undefined || udsPath.startsWith("-")) throw new Error(usage);
  const guest: [number, string][] = [];
  const toHost: [number, string][] = [];
  for (let i = 0; i < rest.length; i++) {
    const target = rest[i] === "--to-host" ? toHost : guest;
    const spec = rest[i] === "--to-host" ? rest[++i] : rest[i];
    const match = /^(\d+)=unix:(.+)$/.exec(spec ?? "");
    if (match === null) throw new Error(`bad argument ${JSON.stringify(spec)}; ${usage}`);
    target.push([Number(match[1]), match[2] as string]);
  }
  const log = (line: string) => process.stderr.write(`fc-emulator: ${line}\n`);
  const emulator = await FcEmulator.start({ udsPath, guest, log });
  for (const [port, path] of toHost) await emulator.forwardGuestConnections(port, path);
  log(`listening on ${udsPath}`);
  for (const [port, path] of guest) log(`guest port ${port} is served at unix:${path}`);
  for (const [port, path] of toHost) {
    log(`connections to unix:${path} stand for a guest's connect to host port ${port}`);
  }
  const stop = () => void emulator.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`fc-emulator: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  });
}
