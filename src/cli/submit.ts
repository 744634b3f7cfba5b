/**
 * `guestlink submit ADDR POOL [JSON]`: a guest's request to the host's mediator, and
 * `guestlink call ADDR METHOD [JSON]`: any method of any guestlink peer. Both print the result
 * (a string as it is, anything else as JSON) and exit 0, or exit 255 with one line naming the
 * error's code.
 */
import { hostname } from "node:os";
import { text } from "node:stream/consumers";
import type { Command } from "commander";
import { submitWork } from "../controller/mediator/submit.ts";
import { InvalidOptionError } from "../errors.ts";
import { agentCommand, connectAgent, positiveInteger, printJson, seconds } from "./common.ts";

/** The JSON argument: `-` reads it from stdin; absent is null. */
async function readJsonArgument(value: string | undefined, what: string): Promise<unknown> {
  if (value === undefined) return null;
  const source = value === "-" ? await text(process.stdin) : value;
  try {
    return JSON.parse(source);
  } catch (err) {
    throw new InvalidOptionError(
      `${what} must be JSON (e.g. '{"a": 1}' or '"text"'; - reads it from stdin): ${(err as Error).message}`,
    );
  }
}

function printResult(result: unknown, json: boolean | undefined, extra: object): void {
  if (json) printJson({ ...extra, result: result ?? null });
  else if (typeof result === "string")
    process.stdout.write(result.endsWith("\n") ? result : `${result}\n`);
  else process.stdout.write(`${JSON.stringify(result ?? null)}\n`);
}

interface CallOptions {
  timeout?: number;
  json?: boolean;
  connectTimeout: number;
  reconnectTimeout?: number;
}

export function registerSubmit(program: Command): void {
  agentCommand(
    program,
    "submit",
    "submit work to a pool of the host's mediator and print its result",
  )
    .argument("<pool>", "the pool's name, as in the mediator's config")
    .argument("[json]", "the request as JSON (- reads it from stdin; none: null)")
    .option(
      "-p, --priority <n>",
      "1 is the most urgent (default: the pool's least urgent level)",
      positiveInteger("--priority"),
    )
    .option(
      "-k, --key <key>",
      "submitting again with the same key returns the kept reply (or waits for the running work) instead of running it again",
    )
    .option(
      "--timeout <seconds>",
      "give up (and take it out of the queue, or stop it) after this long",
      seconds("--timeout"),
    )
    .option(
      "--id <name>",
      "who this guest is, on a mediator socket shared by many (default: the host name)",
    )
    .addHelpText(
      "after",
      `
Examples:
  guestlink submit unix:/run/guestlink/mediator.sock gpu '{"a": 780, "b": 456}' --priority 1 --key job-17
  echo '{"a": 1}' | guestlink submit mailbox:/mnt/host/mediator cpu - --json

Exit status: 0 with the result on stdout; 255 with one line naming the code on stderr
(QUEUE_FULL, QUEUE_TIMEOUT, WORKER_FAILED, POOL_NOT_FOUND, DEADLINE_EXCEEDED, …; docs/errors.md).
Submitted again with the same --key after a crash or a lost connection, the work runs once.`,
    )
    .action(
      async (
        address: string,
        pool: string,
        json: string | undefined,
        opts: CallOptions & { priority?: number; key?: string; id?: string },
      ) => {
        const input = await readJsonArgument(json, "the request");
        const session = await connectAgent(address, { ...opts, peerId: opts.id ?? hostname() });
        try {
          const deadline =
            opts.timeout === undefined ? undefined : performance.now() + opts.timeout * 1000;
          const result = await submitWork(session, pool, input, {
            priority: opts.priority,
            key: opts.key,
            deadline,
          });
          printResult(result, opts.json, { pool, key: opts.key ?? null });
        } finally {
          await session.close();
        }
      },
    );
}

export function registerCall(program: Command): void {
  agentCommand(program, "call", "call a method of a guestlink peer and print its result")
    .argument("<method>", "the method (guestlink info ADDR lists the peer's services)")
    .argument("[json]", "its parameters as JSON (- reads them from stdin; none: no parameters)")
    .option("--timeout <seconds>", "the call's deadline", seconds("--timeout"))
    .addHelpText(
      "after",
      `
Examples:
  guestlink call unix:/run/guestlink/mediator.sock mediator.status --json
  guestlink call unix:/run/guestlink.sock ping '{"seq": 1}'`,
    )
    .action(
      async (address: string, method: string, json: string | undefined, opts: CallOptions) => {
        const params =
          json === undefined ? undefined : await readJsonArgument(json, "the parameters");
        const session = await connectAgent(address, opts);
        try {
          const deadline =
            opts.timeout === undefined ? undefined : performance.now() + opts.timeout * 1000;
          const result = await session.call(method, params, { deadline });
          printResult(result, opts.json, { method });
        } finally {
          await session.close();
        }
      },
    );
}
