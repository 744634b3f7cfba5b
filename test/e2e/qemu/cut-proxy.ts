/**
 * A Unix-socket proxy between the guestlink CLI and the VM (QEMU's chardev socket, or the tcp
 * port QEMU forwards), which cuts a connection on request: both sockets are destroyed with bytes
 * in flight, as when a host's connection breaks. The CLI dials the proxy again (resume) and the
 * proxy dials the VM again, so the guest sees what it would see after a real break: for
 * virtio-serial, nothing but the new connection's HELLO in mid-stream.
 */
import { once } from "node:events";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";

export type Upstream = { path: string } | { host: string; port: number };

/** Where `address` (`unix:PATH` or `tcp:HOST:PORT`) is, for the proxy to dial. */
export function upstreamOf(address: string): Upstream {
  if (address.startsWith("unix:")) return { path: address.slice("unix:".length) };
  const m = /^tcp:(.+):(\d+)$/.exec(address);
  if (!m) throw new Error(`the cut proxy dials unix: or tcp: addresses, not ${address}`);
  return { host: m[1] as string, port: Number(m[2]) };
}

export interface Cut {
  /** Bytes the VM had sent down the cut connection when it was cut. */
  atBytes: number;
  /** performance.now() at the cut. */
  at: number;
}

export class CutProxy {
  readonly address: string;
  readonly cuts: Cut[] = [];
  /** Connections the CLI made to the proxy. */
  connections = 0;
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  /** Cut the current connection once the VM has sent this many bytes down it. */
  #cutAfter: number | undefined;

  private constructor(server: Server, address: string) {
    this.#server = server;
    this.address = address;
  }

  /** Listens on `DIR/cut.sock` and forwards each connection to `upstream`. */
  static async start(upstream: Upstream, dir: string): Promise<CutProxy> {
    const path = join(dir, "cut.sock");
    let proxy: CutProxy | undefined;
    const server = createServer((client) => proxy?.accept(client, upstream));
    server.listen(path);
    await once(server, "listening");
    proxy = new CutProxy(server, `unix:${path}`);
    return proxy;
  }

  /** The next connection to carry `bytes` from the VM is cut there (once). */
  cutAfter(bytes: number): void {
    this.#cutAfter = bytes;
  }

  private accept(client: Socket, upstream: Upstream): void {
    this.connections++;
    const vm = createConnection(upstream);
    const pair: [Socket, Socket] = [client, vm];
    this.#pairs.add(pair);
    let down = 0;
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      vm.destroy();
    };
    vm.on("data", (chunk: Buffer) => {
      const limit = this.#cutAfter;
      if (limit !== undefined && down + chunk.length >= limit) {
        this.#cutAfter = undefined;
        client.write(chunk.subarray(0, Math.max(0, limit - down)));
        this.cuts.push({ atBytes: limit, at: performance.now() });
        end();
        return;
      }
      down += chunk.length;
      if (!client.write(chunk)) {
        vm.pause();
        client.once("drain", () => vm.resume());
      }
    });
    client.on("data", (chunk: Buffer) => {
      if (!vm.write(chunk)) {
        client.pause();
        vm.once("drain", () => client.resume());
      }
    });
    for (const s of pair) {
      s.on("error", end);
      s.on("close", end);
    }
  }

  async close(): Promise<void> {
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
    this.#server.close();
    await once(this.#server, "close").catch(() => {});
  }
}
