/**
 * The demo's damaged path: a relay on a Unix socket that forwards both ways to an agent and
 * inserts bursts of random bytes into what it forwards, wherever the count of bytes says (inside
 * frames as often as between them), as a proxy, a hypervisor's chardev or a flaky path can. It
 * shows what the channel does with that: drop the damaged frame, ask for it again on the same
 * connection, and deliver the output byte-exact.
 */
import net from "node:net";
import { mulberry32 } from "../prng.ts";

export interface JunkRelay {
  /** The relay's address, to connect to instead of the agent's. */
  readonly address: string;
  /** Bursts inserted so far, and their bytes. */
  readonly bursts: number;
  readonly junkBytes: number;
  close(): Promise<void>;
}

/**
 * Listens on `path` and relays each connection to the Unix socket `target`, inserting a burst of
 * 16 to 512 random bytes after about every `everyBytes` forwarded (jittered), in both directions.
 */
export async function startJunkRelay(
  path: string,
  target: string,
  seed: number,
  everyBytes: number,
): Promise<JunkRelay> {
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  const stats = { bursts: 0, junkBytes: 0 };
  const sockets = new Set<net.Socket>();
  const pipe = (from: net.Socket, to: net.Socket) => {
    let until = everyBytes / 2 + int(everyBytes);
    from.on("data", (chunk: Buffer) => {
      let at = 0;
      while (chunk.length - at > until) {
        to.write(chunk.subarray(at, at + until));
        at += until;
        const junk = Buffer.from(Array.from({ length: 16 + int(497) }, () => int(256)));
        to.write(junk);
        stats.bursts++;
        stats.junkBytes += junk.length;
        until = everyBytes / 2 + int(everyBytes);
      }
      until -= chunk.length - at;
      // Backpressure both ways: the relay holds no more than a socket's buffer.
      if (!to.write(chunk.subarray(at))) from.pause();
    });
    to.on("drain", () => from.resume());
    from.on("end", () => to.end());
  };
  const server = net.createServer((client) => {
    const agent = net.connect(target);
    for (const s of [client, agent]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        agent.destroy();
      });
    }
    pipe(client, agent);
    pipe(agent, client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, resolve);
  });
  return {
    address: `unix:${path}`,
    get bursts() {
      return stats.bursts;
    },
    get junkBytes() {
      return stats.junkBytes;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
