/**
 * The listening side of the mailbox: accepts new connection folders, marks those of an earlier
 * incarnation dead, and removes what connectors that died left behind (see mailbox.ts).
 */
import { type FSWatcher, watch as fsWatch } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { ListenFailedError } from "../errors.ts";
import { AcceptQueue } from "./accept-queue.ts";
import {
  ACCEPTED_FILE,
  ALIVE_FILE,
  BROKEN_FILE,
  CONNECTION_NAME,
  CONNECTOR_TO_LISTENER,
  exists,
  fsCode,
  LISTENER_TO_CONNECTOR,
  PREPARING_PREFIX,
  PREPARING_SUFFIX,
  removeFolder,
  writeAtomically,
} from "./mailbox-layout.ts";
import { releaseLock, touchLock } from "./mailbox-lock.ts";
import type { ResolvedMailboxOptions } from "./mailbox-options.ts";
import { MailboxTransport } from "./mailbox-transport.ts";
import type { Listener, Transport } from "./transport.ts";

/** A connection folder this listener knows of and is not reading: cleared once its connector is gone. */
type Leftover = {
  readonly since: number;
  aliveMtime: number | undefined;
  lastChange: number;
};

/** A live connection folder has a connector touching its alive file; removed when it stops. */
export class MailboxListener implements Listener {
  readonly address: string;
  readonly #folder: string;
  readonly #incarnation: string;
  readonly #o: ResolvedMailboxOptions;
  /** Connection folders we read (our transports, not finished). */
  readonly #active = new Set<string>();
  /** Every other connection folder seen: dead, finished, or being prepared. */
  readonly #leftovers = new Map<string, Leftover>();
  readonly #queue: AcceptQueue;
  #closing: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #watcher: FSWatcher | undefined;
  #scanning = false;
  #again = false;
  #lastHeartbeat = performance.now();

  constructor(folder: string, address: string, incarnation: string, o: ResolvedMailboxOptions) {
    this.#folder = folder;
    this.address = address;
    this.#incarnation = incarnation;
    this.#o = o;
    this.#queue = new AcceptQueue(address);
    if (o.watch) {
      try {
        this.#watcher = fsWatch(folder, { persistent: false }, () => this.#scan());
        this.#watcher.on("error", () => this.#watcher?.close());
      } catch {
        // polling alone
      }
    }
    this.#scan();
  }

  [Symbol.asyncIterator](): AsyncIterator<Transport> {
    return this.#queue.iterator(() => this.close());
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#watcher?.close();
    this.#closing = releaseLock(this.#folder, this.#incarnation);
    this.#queue.close();
    return this.#closing;
  }

  #scan(): void {
    if (this.#closing !== undefined) return;
    if (this.#scanning) {
      this.#again = true;
      return;
    }
    this.#scanning = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#look()
      .catch((err: unknown) => {
        // The folder went away or stopped answering: the consumer hears of it, and the lock
        // is released rather than left half-working.
        this.#queue.fail(
          new ListenFailedError(
            `accepting connections on ${this.address} failed (${fsCode(err) ?? String(err)})`,
            { cause: err, details: { address: this.address } },
          ),
        );
        void this.close().catch(() => {});
      })
      .finally(() => {
        this.#scanning = false;
        if (this.#closing !== undefined) return;
        if (this.#again) {
          this.#again = false;
          this.#scan();
        } else {
          this.#timer = setTimeout(() => this.#scan(), this.#o.pollIntervalMs);
        }
      });
  }

  async #look(): Promise<void> {
    const names = await readdir(this.#folder);
    const present = new Set(names);
    const now = performance.now();
    for (const name of names) {
      if (this.#closing !== undefined) return;
      if (this.#active.has(name) || this.#leftovers.has(name)) continue;
      if (CONNECTION_NAME.test(name)) await this.#discover(name, now);
      else if (name.startsWith(PREPARING_PREFIX) && name.endsWith(PREPARING_SUFFIX)) {
        this.#leftovers.set(name, { since: now, aliveMtime: undefined, lastChange: now });
      }
    }
    for (const name of this.#leftovers.keys()) {
      if (!present.has(name)) this.#leftovers.delete(name);
    }
    if (now - this.#lastHeartbeat >= this.#o.heartbeatIntervalMs) {
      this.#lastHeartbeat = now;
      await touchLock(this.#folder).catch(() => {});
      await this.#sweep(now);
    }
  }

  /** A connection folder we have not seen: new (accept it), or an earlier incarnation's. */
  async #discover(name: string, now: number): Promise<void> {
    const dir = join(this.#folder, name);
    const l2c = join(dir, LISTENER_TO_CONNECTOR);
    const leftover = { since: now, aliveMtime: undefined, lastChange: now };
    if (await exists(join(l2c, ACCEPTED_FILE))) {
      // Its byte stream was half-read by a listener that is gone: it cannot go on. The marker
      // makes the connector fail, and its session dial a new connection.
      this.#leftovers.set(name, leftover);
      if (!(await exists(join(l2c, BROKEN_FILE)))) {
        const reason = `the agent listening on ${this.address} restarted; this connection's byte stream is gone`;
        const text = `${JSON.stringify({ by: "listener", reason, at: new Date().toISOString() })}\n`;
        await writeAtomically(l2c, BROKEN_FILE, [Buffer.from(text)], false).catch(() => {});
      }
      return;
    }
    try {
      // Renamed into place, never opened by name: the connector owns the folder it is in.
      await writeAtomically(l2c, ALIVE_FILE, [], false);
      const accepted = {
        incarnation: this.#incarnation,
        pid: process.pid,
        host: hostname(),
        at: new Date().toISOString(),
      };
      await writeAtomically(
        l2c,
        ACCEPTED_FILE,
        [Buffer.from(`${JSON.stringify(accepted)}\n`)],
        false,
      );
    } catch (err) {
      // The connector gave up and removed it meanwhile; anything else is left for the sweep.
      if (fsCode(err) !== "ENOENT") this.#leftovers.set(name, leftover);
      return;
    }
    this.#active.add(name);
    const transport = new MailboxTransport(
      {
        description: this.address,
        folder: dir,
        side: "listener",
        inDir: join(dir, CONNECTOR_TO_LISTENER),
        outDir: l2c,
        onFinished: () => {
          this.#active.delete(name);
          const at = performance.now();
          this.#leftovers.set(name, { since: at, aliveMtime: undefined, lastChange: at });
        },
      },
      this.#o,
    );
    // Closed while this one was being accepted: the queue aborts it, since nobody will take it.
    this.#queue.push(transport);
  }

  /** Removes leftover folders whose connector has shown no sign of life for peerTimeoutMs. */
  async #sweep(now: number): Promise<void> {
    for (const [name, leftover] of this.#leftovers) {
      if (this.#closing !== undefined) return;
      const dir = join(this.#folder, name);
      let mtimeMs: number | undefined;
      if (CONNECTION_NAME.test(name)) {
        try {
          mtimeMs = (await lstat(join(dir, CONNECTOR_TO_LISTENER, ALIVE_FILE))).mtimeMs;
        } catch {
          mtimeMs = undefined;
        }
      }
      if (mtimeMs !== undefined && mtimeMs !== leftover.aliveMtime) {
        leftover.aliveMtime = mtimeMs;
        leftover.lastChange = now;
      } else if (now - leftover.lastChange > this.#o.peerTimeoutMs) {
        await removeFolder(dir);
        this.#leftovers.delete(name);
      }
    }
  }
}
