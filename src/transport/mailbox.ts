/**
 * The shared-folder mailbox (`mailbox:FOLDER`): for a host and a guest whose only channel is a
 * folder both can see (NFS, virtiofs, 9p). The agent listens on the folder; each connect makes a
 * new connection folder in it, with one folder of sequenced files per direction (see
 * mailbox-layout.ts for the layout, mailbox-transport.ts for the byte stream).
 *
 * - Connecting: the connector prepares `.c-<id>.tmp/` (both direction folders, its `alive` file)
 *   and renames it to `c-<id>`, so the listener never sees half of it; then it waits for the
 *   listener's `l2c/accepted`. No listener lock, or a lock whose owner is gone, fails at once with
 *   CONNECT_FAILED; no acceptance within `acceptTimeoutMs` fails too (the supervisor retries).
 * - Listening: `listener.lock` keeps one listener per folder (ADDRESS_IN_USE); a stale lock of a
 *   process that died is replaced. The listener finds new connection folders by listing FOLDER
 *   every poll (and on fs.watch events).
 * - A listener that starts and finds connections accepted by an earlier incarnation (an agent
 *   that restarted) does not take them over mid-stream: it marks them `broken`, so the
 *   connector's transport fails with TRANSPORT_FAILED and its session dials a fresh connection.
 * - Clearing up: a connection folder is removed by whichever side finishes last (after a clean
 *   close, or by the side that sees the other abort or vanish). Folders left behind by processes
 *   that died are removed by the listener once their connector's `alive` file has not changed
 *   for `peerTimeoutMs`: a connector's transport touches it every `heartbeatIntervalMs` whether
 *   or not the session above sends anything.
 */
import { randomBytes } from "node:crypto";
import { type FSWatcher, constants as fsConstants, watch as fsWatch } from "node:fs";
import { access, mkdir, rename, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { AddressInUseError, ConnectFailedError, ListenFailedError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import {
  ACCEPTED_FILE,
  ALIVE_FILE,
  CONNECTION_PREFIX,
  CONNECTOR_TO_LISTENER,
  exists,
  fsCode,
  fsyncFolder,
  HELLO_FILE,
  LISTENER_TO_CONNECTOR,
  PREPARING_PREFIX,
  PREPARING_SUFFIX,
  removeFolder,
} from "./mailbox-layout.ts";
import { MailboxListener } from "./mailbox-listener.ts";
import { acquireLock, describeOwner, ownerIsGone, ownLockOwner, readLock } from "./mailbox-lock.ts";
import {
  type MailboxOptions,
  type ResolvedMailboxOptions,
  resolveMailboxOptions,
} from "./mailbox-options.ts";
import { MailboxTransport } from "./mailbox-transport.ts";
import type { Listener, Transport } from "./transport.ts";

export {
  MAILBOX_ACCEPT_TIMEOUT_MS,
  MAILBOX_HEARTBEAT_INTERVAL_MS,
  MAILBOX_MAX_FILE_BYTES,
  MAILBOX_MAX_UNCONSUMED_BYTES,
  MAILBOX_MAX_UNCONSUMED_FILES,
  MAILBOX_PEER_TIMEOUT_MS,
  MAILBOX_POLL_INTERVAL_MS,
  MAILBOX_READ_HIGH_WATER_MARK_BYTES,
  type MailboxOptions,
} from "./mailbox-options.ts";
export { type MailboxStats, MailboxTransport } from "./mailbox-transport.ts";

/**
 * Opens a new connection to the listener on `folder`. Fails with CONNECT_FAILED (the folder is
 * missing or not writable, no listener, or none accepted in time), or the signal's reason.
 */
export async function connectMailbox(folder: string, options?: MailboxOptions): Promise<Transport> {
  const o = resolveMailboxOptions(options);
  const description = formatAddress({ kind: "mailbox", folder });
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const cancel = new AbortController();
  const attempt = dial(folder, description, o, cancel.signal);
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => cancel.abort(),
    discard: (transport) => transport.abort(),
  });
}

/** Listens on `folder`. Fails with LISTEN_FAILED, or ADDRESS_IN_USE when another listener has it. */
export async function listenMailbox(folder: string, options?: MailboxOptions): Promise<Listener> {
  const o = resolveMailboxOptions(options);
  const description = formatAddress({ kind: "mailbox", folder });
  const onDeadline = () =>
    new ListenFailedError(`listening on ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const attempt = (async () => {
    await checkFolder(folder, description, (message, cause) => {
      return new ListenFailedError(message, {
        cause,
        details: { address: description, errno: fsCode(cause) },
      });
    });
    const incarnation = randomBytes(12).toString("base64url");
    const rules = { foreignStaleMs: o.peerTimeoutMs, observeMs: 3 * o.heartbeatIntervalMs };
    const result = await acquireLock(folder, ownLockOwner(incarnation), rules).catch(
      (err: unknown) => {
        throw new ListenFailedError(
          `cannot create the lock file in ${description} (${fsCode(err) ?? String(err)})`,
          { cause: err, details: { address: description } },
        );
      },
    );
    if (!result.acquired) {
      throw new AddressInUseError(
        `another listener has ${description} (${describeOwner(result.holder)}): stop it, or if it is gone, remove ${join(folder, "listener.lock")}`,
        { details: { address: description, owner: result.holder.owner } },
      );
    }
    return new MailboxListener(folder, description, incarnation, o);
  })();
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => {},
    discard: (listener) => void listener.close().catch(() => {}),
  });
}

/** Fails with `fail(message)` unless `folder` is a folder we may create files in. */
async function checkFolder(
  folder: string,
  description: string,
  fail: (message: string, cause: unknown) => Error,
): Promise<void> {
  let isFolder: boolean;
  try {
    isFolder = (await stat(folder)).isDirectory();
  } catch (err) {
    const code = fsCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw fail(
        `the folder of ${description} does not exist (${code}): create it, or mount the shared folder there first`,
        err,
      );
    }
    throw fail(`cannot use the folder of ${description} (${code ?? String(err)})`, err);
  }
  if (!isFolder) {
    throw fail(`${description} names something that is not a folder (ENOTDIR): give a folder`, {
      code: "ENOTDIR",
    });
  }
  try {
    await access(folder, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    throw fail(
      `the folder of ${description} is not writable by this user (${fsCode(err) ?? String(err)}): both sides must be able to create files in it; check its permissions and the user you run as (and that it is not mounted read-only)`,
      err,
    );
  }
}

async function dial(
  folder: string,
  description: string,
  o: ResolvedMailboxOptions,
  cancelled: AbortSignal,
): Promise<Transport> {
  const failed = (message: string, cause?: unknown, details: Record<string, unknown> = {}) =>
    new ConnectFailedError(message, {
      cause,
      details: { address: description, errno: fsCode(cause), ...details },
    });
  await checkFolder(folder, description, failed);
  const lock = await readLock(folder).catch((err: unknown) => {
    throw failed(`cannot read the listener lock of ${description} (${fsCode(err)})`, err);
  });
  if (lock === undefined) {
    throw failed(
      `no agent listens on ${description} (no listener.lock in the folder): is the agent running with --listen ${description}, and does it see the same folder?`,
      undefined,
      { reason: "no-listener" },
    );
  }
  // Only a lock taken on this host can be judged at once; a listener on the other side of the
  // folder is given acceptTimeoutMs to answer instead.
  if (ownerIsGone(lock) === true) {
    throw failed(
      `the agent that listened on ${description} is gone (${describeOwner(lock)}): start it again`,
      undefined,
      { reason: "listener-gone" },
    );
  }

  const id = randomBytes(12).toString("base64url");
  const name = `${CONNECTION_PREFIX}${id}`;
  const preparing = join(folder, `${PREPARING_PREFIX}${id}${PREPARING_SUFFIX}`);
  const connection = join(folder, name);
  const inDir = join(connection, LISTENER_TO_CONNECTOR);
  const outDir = join(connection, CONNECTOR_TO_LISTENER);
  try {
    await mkdir(join(preparing, CONNECTOR_TO_LISTENER), { recursive: true });
    await mkdir(join(preparing, LISTENER_TO_CONNECTOR));
    await writeFile(join(preparing, CONNECTOR_TO_LISTENER, ALIVE_FILE), "");
    const hello = { pid: process.pid, host: hostname(), version: VERSION, at: new Date() };
    await writeFile(join(preparing, HELLO_FILE), `${JSON.stringify(hello)}\n`);
    // All of it at once: the listener sees the connection complete or not at all.
    if (cancelled.aborted) throw new Error("cancelled");
    await rename(preparing, connection);
    await fsyncFolder(folder);
  } catch (err) {
    await removeFolder(preparing);
    throw failed(
      `cannot create a connection folder in ${description} (${fsCode(err) ?? String(err)})`,
      err,
    );
  }

  try {
    await waitAccepted(inDir, o, cancelled);
  } catch (err) {
    await removeFolder(connection);
    if (cancelled.aborted) throw err;
    throw failed(
      `no agent accepted the connection on ${description} within ${o.acceptTimeoutMs} ms (the lock names ${describeOwner(lock)}): is it running, and does it see the same folder? On NFS, mount with lookupcache=positive and a short attribute cache (actimeo=1)`,
      err,
      { reason: "not-accepted" },
    );
  }
  return new MailboxTransport(
    { description, folder: connection, side: "connector", inDir, outDir },
    o,
  );
}

/** Resolves once `l2c/accepted` exists; polls, and wakes early on fs.watch events. */
function waitAccepted(
  inDir: string,
  o: ResolvedMailboxOptions,
  cancelled: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let watcher: FSWatcher | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let looking = false;
    let looks = 0;
    let done = false;
    const started = performance.now();
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      watcher?.close();
      if (timer !== undefined) clearTimeout(timer);
      cancelled.removeEventListener("abort", onCancel);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onCancel = () => finish(new Error("cancelled"));
    if (cancelled.aborted) {
      onCancel();
      return;
    }
    const look = async () => {
      if (done || looking) return;
      looking = true;
      try {
        if (await exists(join(inDir, ACCEPTED_FILE))) return finish();
        if (performance.now() - started >= o.acceptTimeoutMs) {
          return finish(new Error("not accepted in time"));
        }
      } catch (err) {
        return finish(err as Error);
      } finally {
        looking = false;
      }
      if (timer !== undefined) clearTimeout(timer);
      // Quick looks first (a listener that watches the folder answers at once), then the poll.
      timer = setTimeout(() => void look(), Math.min(o.pollIntervalMs, 2 ** looks++));
    };
    cancelled.addEventListener("abort", onCancel, { once: true });
    if (o.watch) {
      try {
        watcher = fsWatch(inDir, { persistent: false }, () => void look());
        watcher.on("error", () => watcher?.close());
      } catch {
        // polling alone
      }
    }
    void look();
  });
}
