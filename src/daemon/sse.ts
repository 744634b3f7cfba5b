/**
 * Server-sent events to one HTTP client, bounded: a client that does not read cannot make the
 * daemon buffer without bound. `send` skips (and counts) what a client behind cannot take, for
 * streams where the next sample replaces the last (telemetry); `sendOrDrop` ends the stream of a
 * client that fell too far behind, for streams where every event matters (the event log): it
 * reconnects and starts from the current state.
 */
import type { ServerResponse } from "node:http";

/** What a client may have waiting before it counts as behind. */
export const SSE_MAX_BUFFERED_BYTES = 1 << 20;
/** A comment line every so often keeps proxies from closing an idle stream. */
const HEARTBEAT_MS = 15_000;

export class SseStream {
  readonly #res: ServerResponse;
  readonly #heartbeat: NodeJS.Timeout;
  skipped = 0;
  closed = false;

  constructor(res: ServerResponse) {
    this.#res = res;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
    });
    res.write(": guestlink\n\n");
    this.#heartbeat = setInterval(() => this.#write(": keepalive\n\n"), HEARTBEAT_MS);
    this.#heartbeat.unref();
    res.once("close", () => this.close());
  }

  /** Sends unless the client is behind; returns whether it was sent. */
  send(event: string, data: unknown): boolean {
    if (this.closed) return false;
    if (this.#res.writableNeedDrain) {
      this.skipped++;
      return false;
    }
    this.#write(format(event, data));
    return true;
  }

  /** Sends, or ends the stream if the client is more than the bound behind. */
  sendOrDrop(event: string, data: unknown): void {
    if (this.closed) return;
    if (this.#res.writableLength > SSE_MAX_BUFFERED_BYTES) {
      this.#res.destroy();
      this.close();
      return;
    }
    this.#write(format(event, data));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.#heartbeat);
    if (!this.#res.writableEnded) this.#res.end();
  }

  #write(text: string): void {
    if (!this.closed && !this.#res.destroyed) this.#res.write(text);
  }
}

function format(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
