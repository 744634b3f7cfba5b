/**
 * One end of a mailbox connection: a byte stream carried by sequenced files in two folders, one
 * per direction (see mailbox-layout.ts for the layout).
 *
 * - Sending: what is sent in one tick, and while the previous file is being written, goes into
 *   the next file (up to `maxFileBytes`), written atomically as `<seq>` with seq going up by one.
 * - Receiving: the reader opens the next name it expects (never a listing, which NFS caches),
 *   checks the header, and hands the payload to `Inbound`.
 * - The consume/remove rule: a file is removed once the consumer has taken every one of its bytes
 *   out of the `Inbound` (iterator `next()` returned them), and only after every earlier file was
 *   removed. The writer learns of consumption by seeing its oldest file gone, which bounds what it
 *   leaves unconsumed (`maxUnconsumedFiles`, `maxUnconsumedBytes`): beyond that it stops writing,
 *   its send buffer fills, `send()` returns false and `drain()` waits.
 * - Closing writes an `END` file in sequence; `close()` resolves once the peer took all our files
 *   (END included) and we read its END; then the connection folder is removed.
 * - Aborting writes `broken` in our direction; the peer's reader sees it and fails. A peer whose
 *   `alive` file (touched every heartbeat) stops changing for `peerTimeoutMs` is gone too.
 *
 * Everything is found by looking: at once when `fs.watch` reports a change (which it does only
 * for changes made on this machine: not for the other side of NFS, virtiofs or 9p), and otherwise
 * on a timer that starts at 1 ms after any activity and doubles while nothing happens, up to
 * `pollIntervalMs`. So an answer to what we just wrote is seen within milliseconds, and the first
 * message after a quiet spell within one poll interval.
 */
import { type FSWatcher, watch as fsWatch } from "node:fs";
import { lstat, lutimes, unlink } from "node:fs/promises";
import { join } from "node:path";
import { TransportClosedError, TransportFailedError } from "../errors.ts";
import { abortedError, CLOSE_TIMEOUT_MS, CloseLatch, SendGate } from "./gates.ts";
import { Inbound } from "./inbound.ts";
import {
  ALIVE_FILE,
  BROKEN_FILE,
  brokenReason,
  decodeFile,
  encodeHeader,
  FileType,
  fsCode,
  HEADER_BYTES,
  readBounded,
  readMarker,
  removeFolder,
  seqName,
  UnexpectedFileError,
  writeAtomically,
} from "./mailbox-layout.ts";
import type { ResolvedMailboxOptions } from "./mailbox-options.ts";
import type { Transport } from "./transport.ts";

/** Reads of a file shorter than its header says before it counts as cut rather than not yet visible. */
const MAX_SHORT_READS = 5;
/**
 * The first look after any activity comes this soon, and each quiet look doubles the wait up to
 * `pollIntervalMs`: an answer to what we just wrote is usually near, and over NFS, virtiofs or 9p
 * nothing else tells us it came.
 */
const QUICK_POLL_MS = 1;
/**
 * The peer's markers (`broken`, `alive`) are looked at this often while idle, or at once when
 * fs.watch reports a change: every look costs file operations, and over NFS a round trip each.
 */
const PEER_CHECK_MS = 100;
/** Compact the pending-chunk array once this many taken slots sit at its front. */
const COMPACT_AFTER_CHUNKS = 1024;

export interface MailboxConnection {
  readonly description: string;
  /** `FOLDER/c-<id>`. */
  readonly folder: string;
  /** Which end this is, for messages. */
  readonly side: "connector" | "listener";
  /** The peer writes here; we read and remove. */
  readonly inDir: string;
  /** We write here; the peer reads and removes. */
  readonly outDir: string;
  /** Called once when this end has stopped touching the folder (closed, aborted or failed). */
  readonly onFinished?: () => void;
}

/** Counters for tests and diagnostics. */
export interface MailboxStats {
  filesWritten: number;
  filesRead: number;
  filesRemoved: number;
  /** Files written that the peer has not consumed yet. */
  unconsumedFiles: number;
  unconsumedBytes: number;
  /** Bytes sent and not yet written to a file. */
  pendingBytes: number;
  /** Times the writer stopped because the peer left too much unconsumed. */
  writerBlocked: number;
  /** Times the folder was looked at. */
  steps: number;
}

type Outstanding = { readonly seq: number; readonly bytes: number };
type Held = {
  readonly seq: number /** Bytes pushed to the Inbound up to the end of this file. */;
  readonly end: number;
};

export class MailboxTransport implements Transport {
  /** A shared folder (NFS, virtiofs, 9p) can hand over stale or torn files. */
  readonly lossy = true;
  readonly redialable = true;
  readonly description: string;
  readonly #c: MailboxConnection;
  readonly #o: ResolvedMailboxOptions;
  readonly #inbound: Inbound;
  readonly #send = new SendGate();
  readonly #close = new CloseLatch();

  // Sending.
  #pending: Uint8Array[] = [];
  #pendingHead = 0;
  #pendingBytes = 0;
  #outSeq = 1;
  readonly #outstanding: Outstanding[] = [];
  #outstandingBytes = 0;
  #pumping = false;
  #pumpQueued = false;
  #closing = false;
  #endWritten = false;

  // Receiving.
  #inSeq = 1;
  #inEnded = false;
  #readPaused = false;
  #pushed = 0;
  readonly #held: Held[] = [];
  #removing = false;
  #shortReads = 0;

  // Liveness.
  #peerAliveMtime: number | undefined;
  #lastPeerSign = performance.now();
  #lastHeartbeat = performance.now();

  // State.
  #finished = false;
  #aborted = false;
  /** The failure that ended the connection before close() was called, for close() to report. */
  #broken: TransportFailedError | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #watchers: FSWatcher[] = [];
  #stepping = false;
  #again = false;
  /** Looks in a row that found nothing new; sets how long until the next one. */
  #quietPolls = 0;
  /** fs.watch saw a name appear or go since the last look at the peer's markers. */
  #changed = false;
  #lastPeerCheck = 0;
  #wakeQueued = false;
  readonly #stats: MailboxStats = {
    filesWritten: 0,
    filesRead: 0,
    filesRemoved: 0,
    unconsumedFiles: 0,
    unconsumedBytes: 0,
    pendingBytes: 0,
    writerBlocked: 0,
    steps: 0,
  };

  constructor(connection: MailboxConnection, options: ResolvedMailboxOptions) {
    this.description = connection.description;
    this.#c = connection;
    this.#o = options;
    this.#inbound = new Inbound(connection.description, options.readHighWaterMark, () =>
      this.#onRead(),
    );
    if (options.watch) {
      this.#watch(connection.inDir);
      this.#watch(connection.outDir);
    }
    this.#runStep();
  }

  /** `FOLDER/c-<id>`: where this connection's files are. */
  get folder(): string {
    return this.#c.folder;
  }

  get stats(): Readonly<MailboxStats> {
    return {
      ...this.#stats,
      unconsumedFiles: this.#outstanding.length,
      unconsumedBytes: this.#outstandingBytes,
      pendingBytes: this.#pendingBytes,
    };
  }

  send(chunks: readonly Uint8Array[]): boolean {
    this.#send.check();
    for (const chunk of chunks) {
      if (chunk.length === 0) continue;
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
    }
    this.#kickPump();
    return this.#pendingBytes < this.#o.maxFileBytes;
  }

  drain(): Promise<void> {
    return this.#send.drain(this.#pendingBytes < this.#o.maxFileBytes);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inbound.iterator();
  }

  close(): Promise<void> {
    if (this.#close.promise !== undefined) return this.#close.promise;
    const closing = this.#close.begin(this.#aborted);
    if (this.#aborted) return closing;
    if (this.#broken !== undefined) {
      // It broke before we closed: what we sent may not have arrived, and close() must say so.
      this.#close.finish(this.#broken);
      return closing;
    }
    this.#closing = true;
    this.#send.stop(new TransportClosedError(`${this.description} is closed`));
    this.#kickPump();
    // A peer that never takes our last files must not hold the close forever.
    this.#close.deadline(CLOSE_TIMEOUT_MS, () => {
      this.#close.finish(
        new TransportFailedError(
          `${this.description}: the peer had not taken what was sent ${CLOSE_TIMEOUT_MS} ms after closing; the connection was cut`,
          { details: { timeoutMs: CLOSE_TIMEOUT_MS } },
        ),
      );
      this.abort();
    });
    return closing;
  }

  abort(reason?: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const closed = abortedError(this.description, reason);
    this.#send.stop(closed);
    this.#inbound.fail(closed, true);
    if (!this.#finished) {
      this.#finish();
      const why = reason?.message ?? `the ${this.#c.side} aborted the connection`;
      void this.#writeBroken(why);
    }
    this.#close.finish();
  }

  // --- sending ---------------------------------------------------------------------------------

  #kickPump(): void {
    if (this.#pumpQueued || this.#pumping || this.#finished) return;
    this.#pumpQueued = true;
    // Everything sent in this tick goes into one file.
    setImmediate(() => {
      this.#pumpQueued = false;
      void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#pumping || this.#finished) return;
    this.#pumping = true;
    try {
      while (!this.#finished) {
        if (this.#pendingBytes === 0) {
          if (!this.#closing || this.#endWritten) break;
          await this.#writeFile(FileType.END, [], 0);
          this.#endWritten = true;
          continue;
        }
        const bytes = Math.min(this.#pendingBytes, this.#o.maxFileBytes);
        const count = this.#outstanding.length;
        if (
          count >= this.#o.maxUnconsumedFiles ||
          (count > 0 && this.#outstandingBytes + bytes > this.#o.maxUnconsumedBytes)
        ) {
          // The reader is behind: wait for it to remove files (seen by #collectConsumed).
          this.#stats.writerBlocked++;
          break;
        }
        const chunks = this.#takePending(bytes);
        if (this.#send.waiting && this.#pendingBytes < this.#o.maxFileBytes) this.#send.wake();
        await this.#writeFile(FileType.DATA, chunks, bytes);
        this.#activity();
      }
    } catch (err) {
      this.#failLocally(err, "writing a file");
    } finally {
      this.#pumping = false;
    }
    this.#maybeFinishClose();
  }

  #takePending(bytes: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let left = bytes;
    while (left > 0) {
      const chunk = this.#pending[this.#pendingHead] as Uint8Array;
      if (chunk.length <= left) {
        out.push(chunk);
        left -= chunk.length;
        this.#pendingHead++;
      } else {
        out.push(chunk.subarray(0, left));
        this.#pending[this.#pendingHead] = chunk.subarray(left);
        left = 0;
      }
    }
    if (this.#pendingHead === this.#pending.length) {
      this.#pending = [];
      this.#pendingHead = 0;
    } else if (
      this.#pendingHead >= COMPACT_AFTER_CHUNKS &&
      this.#pendingHead * 2 >= this.#pending.length
    ) {
      this.#pending = this.#pending.slice(this.#pendingHead);
      this.#pendingHead = 0;
    }
    this.#pendingBytes -= bytes;
    return out;
  }

  async #writeFile(type: FileType, chunks: Uint8Array[], bytes: number): Promise<void> {
    const seq = this.#outSeq++;
    const header = encodeHeader(type, seq, bytes);
    await writeAtomically(this.#c.outDir, seqName(seq), [header, ...chunks], this.#o.fsync);
    this.#outstanding.push({ seq, bytes: bytes + HEADER_BYTES });
    this.#outstandingBytes += bytes + HEADER_BYTES;
    this.#stats.filesWritten++;
  }

  /** Drops our oldest files from the count as the peer removes them, in order. */
  async #collectConsumed(): Promise<boolean> {
    let freed = false;
    while (this.#outstanding.length > 0 && !this.#finished) {
      const oldest = this.#outstanding[0] as Outstanding;
      try {
        await lstat(join(this.#c.outDir, seqName(oldest.seq)));
        break;
      } catch (err) {
        if (fsCode(err) !== "ENOENT") throw err;
      }
      this.#outstanding.shift();
      this.#outstandingBytes -= oldest.bytes;
      freed = true;
    }
    if (freed) this.#kickPump();
    return freed;
  }

  // --- receiving -------------------------------------------------------------------------------

  /** Reads the files that have arrived, in order, while the consumer keeps up. True if any did. */
  async #readArrived(): Promise<boolean> {
    let arrived = false;
    this.#readPaused = false;
    while (!this.#finished && !this.#inEnded) {
      if (!this.#inbound.belowHighWater) {
        this.#readPaused = true;
        break;
      }
      const seq = this.#inSeq;
      const bytes = await this.#readFile(seq);
      if (bytes === undefined || this.#finished) break;
      const file = decodeFile(bytes, seq);
      if (file.kind === "short") {
        // A cache may show the name before all of its bytes; a file that stays short was cut.
        if (++this.#shortReads <= MAX_SHORT_READS) break;
        throw new TransportFailedError(
          `file ${seqName(seq)} of ${this.description} is shorter than its header says (${bytes.length} bytes): the folder lost bytes`,
          { details: { folder: this.#c.folder, seq, bytes: bytes.length } },
        );
      }
      if (file.kind === "bad") {
        throw new TransportFailedError(
          `file ${seqName(seq)} of ${this.description} is not a mailbox file: ${file.problem}`,
          { details: { folder: this.#c.folder, seq } },
        );
      }
      this.#shortReads = 0;
      this.#inSeq++;
      this.#stats.filesRead++;
      this.#lastPeerSign = performance.now();
      arrived = true;
      if (file.type === FileType.END) {
        this.#inEnded = true;
        this.#held.push({ seq, end: this.#pushed });
        this.#inbound.end();
      } else {
        this.#pushed += file.payload.length;
        this.#held.push({ seq, end: this.#pushed });
        this.#inbound.push(file.payload);
      }
    }
    // A waiting consumer takes a pushed chunk at once, without calling onRead.
    this.#kickRemove();
    return arrived;
  }

  /** The file `seq`, checked to be a regular file within our limit, or undefined if not there yet. */
  async #readFile(seq: number): Promise<Uint8Array | undefined> {
    try {
      return await readBounded(
        join(this.#c.inDir, seqName(seq)),
        HEADER_BYTES + this.#o.maxFileBytes,
      );
    } catch (err) {
      if (!(err instanceof UnexpectedFileError)) throw err;
      throw new TransportFailedError(
        `file ${seqName(seq)} of ${this.description} cannot be taken: ${err.message} (both sides must use the same maxFileBytes)`,
        { cause: err, details: { folder: this.#c.folder, seq } },
      );
    }
  }

  #onRead(): void {
    this.#kickRemove();
    if (this.#readPaused && this.#inbound.belowHighWater) this.#wake();
  }

  /** Bytes the consumer has taken (all of them, once it stopped reading: they are dropped). */
  get #consumed(): number {
    return this.#pushed - this.#inbound.bytes;
  }

  #kickRemove(): void {
    if (this.#removing || this.#finished) return;
    const oldest = this.#held[0];
    if (oldest === undefined || oldest.end > this.#consumed) return;
    this.#removing = true;
    this.#removeConsumed().then(
      () => {
        this.#removing = false;
        this.#maybeFinishClose();
      },
      (err: unknown) => {
        this.#removing = false;
        this.#failLocally(err, "removing a consumed file");
      },
    );
  }

  async #removeConsumed(): Promise<void> {
    while (!this.#finished) {
      const oldest = this.#held[0];
      if (oldest === undefined || oldest.end > this.#consumed) return;
      try {
        await unlink(join(this.#c.inDir, seqName(oldest.seq)));
      } catch (err) {
        if (fsCode(err) !== "ENOENT") throw err;
      }
      this.#held.shift();
      this.#stats.filesRemoved++;
    }
  }

  // --- polling ---------------------------------------------------------------------------------

  #watch(dir: string): void {
    try {
      // Only names appearing or going matter; our own and the peer's temporary files do not.
      const watcher = fsWatch(dir, { persistent: false }, (event, name) => {
        if (event !== "rename" || name?.startsWith(".tmp-")) return;
        this.#changed = true;
        this.#wake();
      });
      // A watch that fails (the folder went away, out of inotify watches) leaves the polling.
      watcher.on("error", () => watcher.close());
      this.#watchers.push(watcher);
    } catch {
      // Polling alone, then.
    }
  }

  /** Looks at the folder soon (after the current tick), without waiting for the poll timer. */
  #wake(): void {
    if (this.#wakeQueued || this.#finished) return;
    this.#wakeQueued = true;
    setImmediate(() => {
      this.#wakeQueued = false;
      this.#runStep();
    });
  }

  #armTimer(): void {
    const delay = Math.min(this.#o.pollIntervalMs, QUICK_POLL_MS * 2 ** this.#quietPolls);
    if (delay < this.#o.pollIntervalMs) this.#quietPolls++;
    this.#timer = setTimeout(this.#onTimer, delay);
  }

  /** We wrote something: look again soon, for the answer. */
  #activity(): void {
    this.#quietPolls = 0;
    if (this.#stepping || this.#finished || this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#armTimer();
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#runStep();
  };

  #runStep(): void {
    if (this.#finished) return;
    if (this.#stepping) {
      this.#again = true;
      return;
    }
    this.#stepping = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#step()
      .catch((err: unknown) => this.#failLocally(err, "reading the folder"))
      .finally(() => {
        this.#stepping = false;
        if (this.#finished) return;
        if (this.#again) {
          this.#again = false;
          this.#runStep();
        } else {
          this.#armTimer();
        }
      });
  }

  async #step(): Promise<void> {
    this.#stats.steps++;
    const arrived = await this.#readArrived();
    const freed = await this.#collectConsumed();
    if (arrived || freed) this.#quietPolls = 0;
    this.#maybeFinishClose();
    if (this.#finished) return;
    // While files arrive the peer is there; a `broken` marker comes after its last file anyway.
    const now = performance.now();
    if (!arrived && (this.#changed || now - this.#lastPeerCheck >= PEER_CHECK_MS)) {
      this.#changed = false;
      this.#lastPeerCheck = now;
      await this.#checkPeer();
    }
    if (this.#finished) return;
    if (now - this.#lastHeartbeat >= this.#o.heartbeatIntervalMs) {
      this.#lastHeartbeat = now;
      const t = new Date();
      await lutimes(join(this.#c.outDir, ALIVE_FILE), t, t).catch((err: unknown) => {
        // The folder was removed: #checkPeer says so next time.
        if (fsCode(err) !== "ENOENT") throw err;
      });
    }
  }

  /** Fails the connection if the peer aborted, left, or stopped showing signs of life. */
  async #checkPeer(): Promise<void> {
    // A marker we cannot read (too big, not a file) still means the peer gave up.
    const broken = await readMarker(join(this.#c.inDir, BROKEN_FILE)).catch((err: unknown) =>
      err instanceof UnexpectedFileError ? "" : Promise.reject(err),
    );
    if (this.#finished) return;
    if (broken !== undefined) {
      this.#peerGone(
        new TransportFailedError(
          `the peer of ${this.description} aborted the connection: ${brokenReason(broken)}`,
          { details: { folder: this.#c.folder } },
        ),
        false,
      );
      return;
    }
    let mtimeMs: number;
    try {
      mtimeMs = (await lstat(join(this.#c.inDir, ALIVE_FILE))).mtimeMs;
    } catch (err) {
      if (fsCode(err) !== "ENOENT") throw err;
      // After a clean close the peer removes the folder, our files first and its heartbeat last
      // (removeFolder). If it took all we wrote, END included, and we read its END, this is that
      // close, not an abort: we finish once our reader has taken the rest.
      await this.#collectConsumed();
      if (this.#endWritten && this.#outstanding.length === 0 && this.#inEnded) {
        this.#maybeFinishClose();
        return;
      }
      if (this.#finished) return;
      this.#peerGone(
        new TransportFailedError(
          `the connection folder ${this.#c.folder} of ${this.description} was removed (by the peer giving up on us, or by hand)`,
          { details: { folder: this.#c.folder } },
        ),
        false,
      );
      return;
    }
    const now = performance.now();
    if (mtimeMs !== this.#peerAliveMtime) {
      this.#peerAliveMtime = mtimeMs;
      this.#lastPeerSign = now;
    } else if (now - this.#lastPeerSign > this.#o.peerTimeoutMs) {
      this.#peerGone(
        new TransportFailedError(
          `no sign of life from the peer of ${this.description} for ${Math.round(now - this.#lastPeerSign)} ms (its alive file stopped changing): it is gone or frozen`,
          { details: { folder: this.#c.folder, peerTimeoutMs: this.#o.peerTimeoutMs } },
        ),
        true,
      );
    }
  }

  // --- endings ---------------------------------------------------------------------------------

  /** Completes close() once the peer took all we wrote (END included) and we read its END. */
  #maybeFinishClose(): void {
    if (
      this.#finished ||
      !this.#endWritten ||
      this.#outstanding.length > 0 ||
      !this.#inbound.settled
    ) {
      return;
    }
    this.#finish();
    // Both directions are done: nobody needs the folder any more.
    void removeFolder(this.#c.folder).then(() => this.#close.finish());
  }

  /** The peer aborted, went away, or stopped living: fail, and clear up after it. */
  #peerGone(err: TransportFailedError, tellPeer: boolean): void {
    if (this.#finished) return;
    this.#finish();
    this.#break(err);
    void (async () => {
      // A peer declared dead may only be slow: the marker makes it fail too when it looks.
      if (tellPeer) await this.#writeBroken(err.message);
      await removeFolder(this.#c.folder);
    })();
  }

  /** A file operation of ours failed: the stream cannot go on; the peer is told if possible. */
  #failLocally(err: unknown, doing: string): void {
    if (this.#finished) return;
    const failed =
      err instanceof TransportFailedError
        ? err
        : new TransportFailedError(
            `the mailbox connection ${this.description} failed ${doing} (${fsCode(err) ?? String(err)})`,
            { cause: err, details: { folder: this.#c.folder } },
          );
    this.#finish();
    this.#break(failed);
    void this.#writeBroken(failed.message);
  }

  #break(err: TransportFailedError): void {
    if (this.#close.pending) {
      // Closing: report the loss only if some of what we sent may not have been taken.
      const lost = this.#outstanding.length > 0 || this.#pendingBytes > 0 || !this.#endWritten;
      this.#close.finish(lost ? err : undefined);
    } else if (this.#send.closed === undefined) {
      this.#broken = err;
    }
    this.#send.stop(
      new TransportClosedError(`${this.description} cannot send: the connection broke`, {
        cause: err,
      }),
    );
    // What was read before the break is still delivered, then the error.
    this.#inbound.fail(err, false);
  }

  /** Stops every timer, watch and file operation of ours; the folder is the peer's (or no one's). */
  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watchers) w.close();
    this.#watchers.length = 0;
    this.#pending = [];
    this.#pendingHead = 0;
    this.#pendingBytes = 0;
    this.#c.onFinished?.();
  }

  async #writeBroken(reason: string): Promise<void> {
    const text = `${JSON.stringify({ by: this.#c.side, reason, at: new Date().toISOString() })}\n`;
    // Best effort: the folder may be gone already, and then nobody is left to tell.
    await writeAtomically(this.#c.outDir, BROKEN_FILE, [Buffer.from(text)], false).catch(() => {});
  }
}
