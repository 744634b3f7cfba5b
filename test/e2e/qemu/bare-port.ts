/**
 * The host's end of guest/bare-port.cjs (`guestlink.mode=echo`): raw bytes over the virtio-serial
 * port's Unix socket, no guestlink in between. What the port itself does, for the agent's figures
 * to be read against. See bare-port.cjs for the line commands.
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";

/** byte i of `source N` is PATTERN[i % PATTERN.length] (the same as in bare-port.cjs). */
const PATTERN = Buffer.from(Array.from({ length: 251 }, (_, i) => (i * 7 + 3) & 0xff));
const WRITE_CHUNK_BYTES = 64 * 1024;

export interface Transfer {
  bytes: number;
  ms: number;
  /** Megabytes (10^6) a second. */
  mbPerS: number;
}

function transfer(bytes: number, ms: number): Transfer {
  return { bytes, ms, mbPerS: bytes / 1e6 / (ms / 1000) };
}

/** One connection to the guest's bare port; the chardev takes one client at a time. */
export class BarePort {
  readonly #socket: Socket;
  #buffered: Buffer[] = [];
  #bufferedBytes = 0;
  #wake: (() => void) | undefined;
  #ended: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#buffered.push(d);
      this.#bufferedBytes += d.length;
      this.#wake?.();
    });
    const end = (err?: Error) => {
      this.#ended ??= err ?? new Error("the port's socket closed");
      this.#wake?.();
    };
    socket.on("error", end);
    socket.on("close", () => end());
  }

  /** Connects to the serial socket and waits until the guest answers `ping`. */
  static async connect(socketPath: string, { timeoutMs = 30_000 } = {}): Promise<BarePort> {
    const socket = connect(socketPath);
    await once(socket, "connect");
    const port = new BarePort(socket);
    const timer = setTimeout(
      () => socket.destroy(new Error("the guest did not answer ping")),
      timeoutMs,
    );
    try {
      socket.write("ping\n");
      const line = await port.#readLine();
      if (line !== "pong") throw new Error(`the guest answered ping with ${JSON.stringify(line)}`);
    } finally {
      clearTimeout(timer);
    }
    return port;
  }

  /** Waits until at least `n` bytes are buffered, or throws why the socket ended. */
  async #fill(n: number): Promise<void> {
    while (this.#bufferedBytes < n) {
      if (this.#ended) throw this.#ended;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }

  /** Takes up to `max` buffered bytes, waiting for at least one. */
  async #take(max: number): Promise<Buffer> {
    await this.#fill(1);
    const first = this.#buffered[0] as Buffer;
    const chunk = first.length <= max ? first : first.subarray(0, max);
    if (chunk === first) this.#buffered.shift();
    else this.#buffered[0] = first.subarray(max);
    this.#bufferedBytes -= chunk.length;
    return chunk;
  }

  async #readLine(): Promise<string> {
    const parts: Buffer[] = [];
    for (;;) {
      const chunk = await this.#take(Number.POSITIVE_INFINITY);
      const nl = chunk.indexOf(0x0a);
      if (nl < 0) {
        parts.push(chunk);
        continue;
      }
      parts.push(chunk.subarray(0, nl));
      const rest = chunk.subarray(nl + 1);
      if (rest.length > 0) {
        this.#buffered.unshift(rest);
        this.#bufferedBytes += rest.length;
      }
      return Buffer.concat(parts).toString("utf8");
    }
  }

  async #write(data: Buffer | string): Promise<void> {
    if (this.#ended) throw this.#ended;
    if (this.#socket.write(data)) return;
    const socket = this.#socket;
    await new Promise<void>((resolve, reject) => {
      const settle = () => {
        socket.off("drain", settle);
        socket.off("close", settle);
        if (this.#ended) reject(this.#ended);
        else resolve();
      };
      socket.on("drain", settle);
      socket.on("close", settle);
    });
  }

  /** Sends `data` and reads it back; resolves with what came back and how long it took. */
  async echo(data: Buffer): Promise<{ back: Buffer } & Transfer> {
    const started = performance.now();
    await this.#write(`echo ${data.length}\n`);
    const back: Buffer[] = [];
    let got = 0;
    const reading = (async () => {
      while (got < data.length) {
        const chunk = await this.#take(data.length - got);
        back.push(chunk);
        got += chunk.length;
      }
    })();
    for (let off = 0; off < data.length; off += WRITE_CHUNK_BYTES) {
      await this.#write(data.subarray(off, off + WRITE_CHUNK_BYTES));
    }
    await reading;
    return { back: Buffer.concat(back), ...transfer(data.length, performance.now() - started) };
  }

  /**
   * Host to guest: sends `bytes` bytes, which the guest reads and counts. Timed on the host from
   * the first write to the guest's receipt; `guestMs` is the guest's own first-to-last-byte time.
   */
  async sink(bytes: number): Promise<Transfer & { guestMs: number }> {
    const block = Buffer.alloc(WRITE_CHUNK_BYTES, 0x5a);
    await this.#write(`sink ${bytes}\n`);
    const started = performance.now();
    for (let sent = 0; sent < bytes; sent += block.length) {
      await this.#write(block.subarray(0, Math.min(block.length, bytes - sent)));
    }
    const line = await this.#readLine();
    const ms = performance.now() - started;
    const m = /^sank (\d+) (\d+)$/.exec(line);
    if (!m || Number(m[1]) !== bytes)
      throw new Error(`the guest answered sink with ${JSON.stringify(line)}`);
    return { ...transfer(bytes, ms), guestMs: Number(m[2]) / 1000 };
  }

  /**
   * Guest to host: the guest writes `bytes` bytes of a known pattern from node (`source`) or of
   * zeros from busybox dd (`dd`, rounded up to 64 KiB); every byte is checked as it arrives.
   * Timed from the request to the last byte.
   */
  async receive(bytes: number, how: "source" | "dd" = "source"): Promise<Transfer> {
    const expected =
      how === "dd" ? Math.ceil(bytes / WRITE_CHUNK_BYTES) * WRITE_CHUNK_BYTES : bytes;
    const started = performance.now();
    await this.#write(`${how} ${bytes}\n`);
    let got = 0;
    while (got < expected) {
      const chunk = await this.#take(expected - got);
      for (let i = 0; i < chunk.length; i++) {
        const want = how === "dd" ? 0 : (PATTERN[(got + i) % PATTERN.length] as number);
        if (chunk[i] !== want)
          throw new Error(`byte ${got + i} from the guest is ${chunk[i]}, not ${want}`);
      }
      got += chunk.length;
    }
    const ms = performance.now() - started;
    if (how === "dd") {
      const line = await this.#readLine();
      if (line !== "ready") throw new Error(`the guest's dd ended with ${JSON.stringify(line)}`);
    }
    return transfer(expected, ms);
  }

  /** Tells the guest program to exit (the VM then powers off) and closes the connection. */
  async quit(): Promise<void> {
    await this.#write("quit\n");
    const closed = this.#socket.closed ? Promise.resolve() : once(this.#socket, "close");
    this.#socket.end();
    await closed.catch(() => {});
  }

  close(): void {
    this.#socket.destroy();
  }
}
