/**
 * `guestlink get` and `guestlink put`: files of any size, sha256-checked, written atomically;
 * folders with -r; `-` for stdout (get) or stdin (put). Ctrl-C (or SIGTERM, SIGHUP) cancels:
 * the partial copy is removed on both sides and one line says so.
 */
import { fstatSync } from "node:fs";
import { stat } from "node:fs/promises";
import type { Command } from "commander";
import type { TreeResult } from "../controller/file-tree.ts";
import type { TransferResult } from "../controller/files.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import {
  agentCommand,
  connectAgent,
  formatBytes,
  JSON_SCHEMA_VERSION,
  printJson,
} from "./common.ts";
import { Progress } from "./progress.ts";

interface TransferOptions {
  json?: boolean;
  recursive?: boolean;
  follow: boolean;
  connectTimeout: number;
}

/**
 * What a signal that cancels a transfer is called in its message, and its exit status: 130 for
 * each, as `exec` does, since SIGTERM and SIGHUP do what Ctrl-C does.
 */
const CANCELLING_SIGNALS = {
  SIGINT: { what: "interrupted (Ctrl-C)", status: 130 },
  SIGTERM: { what: "terminated (SIGTERM)", status: 130 },
  SIGHUP: { what: "hung up (SIGHUP)", status: 130 },
} as const;

/** Exit status when stdout's reader went away during `get … -`, as for a process SIGPIPE ends. */
const EXIT_BROKEN_PIPE = 141;

/**
 * Runs `work` with a signal that Ctrl-C, SIGTERM and SIGHUP abort; a second one leaves at once.
 * Resolves with the exit status the signal calls for, or undefined when none came.
 */
async function cancellable(
  work: (signal: AbortSignal) => Promise<void>,
): Promise<number | undefined> {
  const controller = new AbortController();
  let status: number | undefined;
  const handlers = Object.entries(CANCELLING_SIGNALS).map(([name, { what, status: code }]) => {
    const handler = () => {
      if (status !== undefined) process.exit(status);
      status = code;
      controller.abort(new GuestlinkError("CANCELLED", what));
    };
    process.on(name, handler);
    return () => process.off(name, handler);
  });
  try {
    await work(controller.signal);
    return status;
  } catch (err) {
    if (status === undefined || !isGuestlinkError(err, "CANCELLED")) throw err;
    process.stderr.write(`guestlink: ${err.message} [CANCELLED]\n`);
    return status;
  } finally {
    for (const remove of handlers) remove();
  }
}

function summary(
  direction: "get" | "put",
  address: string,
  from: string,
  result: TransferResult | TreeResult,
  seconds: number,
): string {
  const where =
    direction === "get"
      ? `${address}:${from} -> ${result.path}`
      : `${from} -> ${address}:${result.path}`;
  const size = "size" in result ? result.size : result.bytes;
  const rate = `${formatBytes(Math.round(size / Math.max(seconds, 0.001)))}/s`;
  const moved = `${formatBytes(size)} in ${seconds.toFixed(2)} s (${rate})`;
  if ("sha256" in result) {
    return `${where}  ${moved}, sha256 ${result.sha256}, mode ${result.mode.toString(8)}`;
  }
  const skipped = result.skipped.length > 0 ? `, ${result.skipped.length} skipped` : "";
  return `${where}  ${result.files} files in ${result.folders} folders, ${moved}${skipped}`;
}

async function transfer(
  direction: "get" | "put",
  address: string,
  from: string,
  to: string,
  opts: TransferOptions,
): Promise<void> {
  const toStdout = direction === "get" && to === "-";
  const fromStdin = direction === "put" && from === "-";
  if (opts.recursive && (toStdout || fromStdin)) {
    throw new GuestlinkError(
      "INVALID_OPTION",
      "-r copies folders and cannot use - (stdin or stdout)",
    );
  }
  // Loaded now rather than with the program, so that --help and --version start quickly.
  const [{ getTree, putTree }, { getFile, putFile }] = await Promise.all([
    import("../controller/file-tree.ts"),
    import("../controller/files.ts"),
  ]);
  const session = await connectAgent(address, opts);
  const progress = new Progress(
    direction === "get" ? `get ${from}` : `put ${to}`,
    !opts.json && Boolean(process.stderr.isTTY),
  );
  const start = performance.now();
  let status: number | undefined;
  let cancelled = false;
  try {
    status = await cancellable(async (signal) => {
      signal.addEventListener("abort", () => (cancelled = true), { once: true });
      const options = {
        signal,
        follow: opts.follow,
        onProgress: (bytes: number, total?: number) => progress.update(bytes, total),
      };
      let result: TransferResult | TreeResult;
      try {
        if (opts.recursive) {
          result =
            direction === "get"
              ? await getTree(session, from, to, options)
              : await putTree(session, from, to, options);
        } else {
          result =
            direction === "get"
              ? await getFile(session, from, toStdout ? process.stdout : to, options)
              : await putFile(session, fromStdin ? process.stdin : from, to, options);
        }
      } finally {
        progress.done();
      }
      const seconds = (performance.now() - start) / 1000;
      const skipped = "skipped" in result ? result.skipped : [];
      for (const entry of skipped) {
        process.stderr.write(
          `guestlink: skipped ${entry.path}: a ${entry.type}, not a file or folder\n`,
        );
      }
      const bytes = "size" in result ? result.size : result.bytes;
      const bytesPerSecond = Math.round(bytes / Math.max(seconds, 0.001));
      const value = { direction, from, to, ...result, seconds, bytesPerSecond };
      if (toStdout || (direction === "get" && (await isOurStdout(result.path)))) {
        // stdout is the file's: like cat, say nothing, unless asked for JSON (then on stderr).
        if (opts.json) {
          process.stderr.write(
            `${JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ...value })}\n`,
          );
        }
      } else if (opts.json) {
        printJson(value);
      } else {
        process.stdout.write(`${summary(direction, address, from, result, seconds)}\n`);
      }
    });
  } catch (err) {
    if (toStdout && (err as { code?: unknown }).code === "EPIPE") {
      // Whoever read our stdout has stopped (`get … - | head`): end quietly, as cat does.
      status = EXIT_BROKEN_PIPE;
    } else {
      throw withFolderHint(err, direction, opts);
    }
  } finally {
    // A read of stdin still waiting for bytes would hold the process open after a cancel.
    if (fromStdin) process.stdin.destroy();
    // After a cancel the agent may not answer (that may be why): do not wait for it.
    if (cancelled || status !== undefined) session.abort();
    else await session.close();
  }
  if (status !== undefined) process.exitCode = status;
}

/** Whether `path` is what our stdout is (`get … /dev/stdout`): then the report stays off it. */
async function isOurStdout(path: string): Promise<boolean> {
  try {
    const [ours, theirs] = [fstatSync(1), await stat(path)];
    return ours.dev === theirs.dev && ours.ino === theirs.ino;
  } catch {
    return false;
  }
}

/** A source that is a folder, copied without -r: say how to copy it. */
function withFolderHint(err: unknown, direction: "get" | "put", opts: TransferOptions): unknown {
  const sourceSide = direction === "get" ? "remote" : "local";
  if (opts.recursive || !isGuestlinkError(err, "IS_A_DIRECTORY")) return err;
  if (err.details?.side !== sourceSide) return err;
  return new GuestlinkError(err.code, `${err.message}; add -r to copy a folder`, {
    cause: err,
    details: err.details,
  });
}

function transferCommand(program: Command, direction: "get" | "put", description: string) {
  return agentCommand(program, direction, description)
    .option("-r, --recursive", "copy a folder and everything in it (file by file)")
    .option(
      "--no-follow",
      "if the destination is a symlink, replace the link itself instead of the file it points to",
    );
}

const DESTINATIONS = `
Destinations: a folder gets the copy under the source's name (as cp does); a symlink is
followed and the file it points to is replaced (--no-follow replaces the link); a FIFO or a
device (/dev/null, /dev/stdout, a named pipe) is written through, never replaced; a socket is
refused. A regular file is replaced atomically: the copy is written next to it and renamed over
it once its sha256 checks out, so a failure or Ctrl-C leaves the old file and no temporary file.
Remote relative paths are relative to the agent's working folder.

Exit status: 0 copied; 130 cancelled (Ctrl-C, SIGTERM, SIGHUP); 255 guestlink failed.`;

export function registerFiles(program: Command): void {
  transferCommand(
    program,
    "get",
    "copy a file or folder from the agent (sha256-checked, written atomically, mode kept)",
  )
    .argument("<remote>", "the file (or, with -r, folder) in the agent")
    .argument("<local>", "where to put it here; - writes the file to stdout")
    .addHelpText(
      "after",
      `${DESTINATIONS}

Examples:
  guestlink get unix:/run/guestlink.sock /var/log/syslog ./syslog
  guestlink get unix:/run/guestlink.sock /etc/os-release - | grep VERSION
  guestlink get -r unix:/run/guestlink.sock /var/log ./guest-logs
`,
    )
    .action((address: string, remote: string, local: string, opts: TransferOptions) =>
      transfer("get", address, remote, local, opts),
    );
  transferCommand(
    program,
    "put",
    "copy a file or folder to the agent (sha256-checked, written atomically, mode kept)",
  )
    .argument("<local>", "the file (or, with -r, folder) here; - reads stdin")
    .argument("<remote>", "where to put it in the agent")
    .addHelpText(
      "after",
      `${DESTINATIONS}

Examples:
  guestlink put unix:/run/guestlink.sock ./build.tar /tmp/build.tar
  guestlink put unix:/run/guestlink.sock ./app.conf /etc/app/        # into the folder
  tar c ./src | guestlink put unix:/run/guestlink.sock - /tmp/src.tar
  guestlink put -r unix:/run/guestlink.sock ./site /srv/www
`,
    )
    .action((address: string, local: string, remote: string, opts: TransferOptions) =>
      transfer("put", address, local, remote, opts),
    );
}
