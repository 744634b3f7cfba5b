/**
 * Our stdout and stderr when their reader goes away (`guestlink watch ADDR | head -1`): a write
 * then fails with EPIPE, which Node reports as an `error` event that would crash the process with
 * a stack trace. Instead it is noted here and `stdoutClosed` aborts, so that a command still
 * producing output (watch, ping, demo) stops and ends quietly with status 0, as a reader leaving
 * is a normal way to end it. `exec` has its own answer (the command's stdout is closed in the
 * agent, see controller/exec.ts), and takes no notice of this signal.
 */

const closed = new AbortController();

/** Aborts once a write to our stdout has failed because nobody reads it any more. */
export const stdoutClosed: AbortSignal = closed.signal;

let installed = false;

/** Installs the handlers once; from then on a failed write to stdout or stderr never crashes. */
export function endQuietlyWhenStdoutCloses(): void {
  if (installed) return;
  installed = true;
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (closed.signal.aborted) return;
    closed.abort();
    // A full disk or a broken device is not a reader going away: what was asked for is lost.
    if (err.code !== "EPIPE") {
      process.stderr.write(
        `guestlink: cannot write to stdout (${err.code ?? err.message}): the output is incomplete\n`,
      );
      process.exitCode = 255;
    }
  });
  // Nothing can be said once stderr is gone: carry on with what stdout still takes.
  process.stderr.on("error", () => {});
}
