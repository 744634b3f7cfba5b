/**
 * This process's stdin and stdout as a transport (`stdio`): how an agent started by
 * `exec:ssh host guestlink agent --stdio` talks to its host. stdout then carries the protocol, so
 * nothing else in the process may write to it (guestlink's own logging goes to stderr).
 *
 * `close()` ends stdout and resolves once it is flushed. Whether the peer sees the end at once
 * depends on what stdout is: a socket pair (a Node parent) carries it; a plain pipe (most shells
 * and ssh) only ends when the process exits, because Node never closes file descriptor 1.
 */
import { ConnectFailedError, InvalidAddressError } from "../errors.ts";
import { throwIfDone } from "./call-options.ts";
import { NodeStreamTransport } from "./node-stream.ts";
import type { CallOptions, Transport } from "./transport.ts";

let inUse = false;

/** This process's stdin/stdout as a transport; a process has one, so this works once. */
export async function connectStdio(options?: CallOptions): Promise<Transport> {
  throwIfDone(
    options,
    () => new ConnectFailedError("connecting to stdio did not start before the deadline"),
  );
  if (inUse) {
    throw new ConnectFailedError(
      "stdio is already used by a transport: a process has one stdin and one stdout",
    );
  }
  // A terminal is a person, not a peer: the handshake's binary frames would land on the screen
  // and the session would wait for a HELLO nobody types.
  const terminal = [process.stdin.isTTY && "stdin", process.stdout.isTTY && "stdout"].filter(
    Boolean,
  );
  if (terminal.length > 0) {
    throw new InvalidAddressError(
      `cannot use stdio here: ${terminal.join(" and ")} ${terminal.length > 1 ? "are" : "is"} a terminal; stdio carries the protocol between two programs (a host runs this as exec:COMMAND, e.g. exec:ssh HOST guestlink agent --stdio)`,
      { details: { address: "stdio", terminal } },
    );
  }
  inUse = true;
  // Stray output on stdout (a library that prints) lands in the byte stream: lossy.
  return new NodeStreamTransport(process.stdin, process.stdout, {
    description: "stdio",
    lossy: true,
  });
}
