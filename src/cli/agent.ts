/** `guestlink agent`: run the agent on listeners, an outgoing connection, or stdio. */
import type { Command } from "commander";
import { DEFAULT_DRAIN_TIMEOUT_MS } from "../agent/drain.ts";
import { InvalidOptionError } from "../errors.ts";
import { parseAddress } from "../transport/address.ts";
import { addGlobalOptions, seconds } from "./options.ts";

interface AgentCommandOptions {
  listen?: string[];
  connect?: string;
  stdio?: boolean;
  allow?: string;
  id?: string;
  logLevel?: string;
  payloadChecksum: boolean;
  resumeWindow: number;
  drainTimeout: number;
  keyFile?: string;
  insecure?: boolean;
  natsCreds?: string;
  filesRoot?: string;
  maxConnections?: number;
  maxPending?: number;
  helloTimeout?: number;
  maxStreams?: number;
  maxCalls?: number;
}

/** A number of seconds that may be 0 (for --drain-timeout: stop the commands at once). */
function secondsOrZero(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
      throw new InvalidOptionError(`${name} takes a number of seconds (0 or more), got "${value}"`);
    }
    return n;
  };
}

/** The id of the first nats: address listened on: the agent's id there is its id everywhere. */
function natsAgentId(listen: readonly string[] | undefined): string | undefined {
  for (const address of listen ?? []) {
    const a = parseAddress(address);
    if (a.kind === "nats") return a.agent;
  }
  return undefined;
}

/** Failures of an operation that mean a peer asked for what it may not have. */
const REFUSALS: ReadonlySet<string> = new Set(["POLICY_DENIED", "PATH_OUTSIDE_ROOT"]);

/** A whole number of things, 1 or more. */
function count(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
      throw new InvalidOptionError(`${name} takes a whole number (1 or more), got "${value}"`);
    }
    return n;
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** With `isDefault`, `guestlink-agent --listen …` needs no `agent` word (the bundled agent). */
export function registerAgent(program: Command, { isDefault = false } = {}): void {
  addGlobalOptions(program.command("agent", { isDefault }))
    .description("run the agent: serve exec, files, info and telemetry to hosts that connect")
    .option(
      "--listen <address>",
      "listen on an address (unix:PATH, tcp:HOST:PORT, serial:/dev/virtio-ports/NAME, vsock:CID:PORT, fc:UDS_PATH:PORT, mailbox:FOLDER, nats://HOST:PORT/AGENT-ID); repeatable",
      collect,
    )
    .option(
      "--connect <address>",
      "connect out to a host listening at this address, reconnecting when it goes away",
    )
    .option(
      "--stdio",
      "serve one session on stdin and stdout (for exec:ssh host guestlink agent --stdio)",
    )
    .option(
      "--allow <list>",
      "serve only these, comma-separated: services (exec, files, info, telemetry, workload) or methods (files.get, files.put, files.list, …); ping always",
    )
    .option(
      "--key-file <file>",
      "the agent's key (guestlink keygen FILE): tcp: addresses take only TLS 1.3 connections that hold it",
    )
    .option(
      "--insecure",
      "allow listening on a non-loopback tcp: address without --key-file (anyone who reaches it can run commands)",
    )
    .option(
      "--nats-creds <file>",
      "for nats: addresses, the NATS credentials file (a user JWT and NKey seed) to log in with",
    )
    .option(
      "--id <name>",
      "the agent's id in handshakes (default: its id on NATS when it listens there, else the host name)",
    )
    .option(
      "--files-root <dir>",
      "confine get and put to this folder: relative paths are taken in it, and no path (no .., no symlink) may lead out of it",
    )
    .option(
      "--max-connections <n>",
      "sessions each listener holds at once, open or waiting to resume; one more is refused with LIMIT_EXCEEDED (default 64)",
      count("--max-connections"),
    )
    .option(
      "--max-pending <n>",
      "connections each listener lets wait for their HELLO; one more drops the oldest (default 64)",
      count("--max-pending"),
    )
    .option(
      "--hello-timeout <seconds>",
      "how long a new connection has to say HELLO, a keyed one's TLS handshake included (default 10)",
      seconds("--hello-timeout"),
    )
    .option(
      "--max-streams <n>",
      "streams a peer may have open at once in a session; a call that would open more gets LIMIT_EXCEEDED (default 4096)",
      count("--max-streams"),
    )
    .option(
      "--max-calls <n>",
      "calls a peer may have running at once in a session; past it the agent stops reading from that peer until one ends (default 1024)",
      count("--max-calls"),
    )
    .option(
      "--no-payload-checksum",
      "go without payload checksums if the peer agrees too (never over a lossy pipe: serial, stdio, exec, mailbox)",
    )
    .option(
      "--resume-window <seconds>",
      "how long a session whose connection was lost is kept for its host to resume it",
      seconds("--resume-window"),
      60,
    )
    .option(
      "--drain-timeout <seconds>",
      "on SIGTERM or SIGINT, how long running commands may take to finish before their process groups are killed (a second signal kills them at once)",
      secondsOrZero("--drain-timeout"),
      DEFAULT_DRAIN_TIMEOUT_MS / 1000,
    )
    .option("--log-level <level>", "debug, info, warn or error (logs go to stderr)", "info")
    .addHelpText(
      "after",
      `
Examples:
  guestlink agent --listen unix:/run/guestlink.sock
  guestlink agent --listen unix:/run/g.sock --listen tcp:127.0.0.1:7070 --allow info,telemetry
  guestlink agent --listen tcp:0.0.0.0:7070 --key-file /etc/guestlink/key   # reached with: guestlink exec --key-file KEY tcp:HOST:7070 -- uname
  guestlink agent --listen serial:/dev/virtio-ports/org.guestlink.0   # in a QEMU guest; host: unix:CHARDEV_SOCKET
  guestlink agent --listen nats://nats.example:4222/io-1   # reached with: guestlink exec nats://nats.example:4222/io-1 -- uname
  guestlink agent --stdio                      # spoken to by: guestlink exec 'exec:ssh vm guestlink agent --stdio' -- uname -a`,
    )
    .action(async (opts: AgentCommandOptions, command: Command) => {
      const verbose = Boolean(command.optsWithGlobals().verbose);
      // Loaded here, not with the CLI: the agent's services are no concern of the other commands.
      const { makeLogger } = await import("./logger.ts");
      const log = makeLogger(verbose, verbose ? "debug" : opts.logLevel);
      const { runAgent } = await import("../agent/run.ts");
      const { readKeyFile } = await import("../platform/key-file.ts");
      const { Agent } = await import("../agent/agent.ts");
      const { FilesRoot } = await import("../agent/files-root.ts");
      const filesRoot =
        opts.filesRoot === undefined ? undefined : await FilesRoot.open(opts.filesRoot);
      const { spawnAddon } = await import("../agent/spawn-native.ts");
      const agent = new Agent({
        filesRoot,
        // Every command run and file touched, with who asked and over what: stderr, never stdout.
        // A refusal (an allow-list, the files root) is worth a warning: someone tried.
        onOperation: ({ phase, method, request, result, ...who }) =>
          (REFUSALS.has(who.code ?? "") ? log.warn : log.info).call(
            log,
            { ...who, ...request, ...result },
            phase === "start" ? method : `${method} ${who.code === undefined ? "done" : "failed"}`,
          ),
        id: opts.id ?? natsAgentId(opts.listen),
        allow: opts.allow
          ?.split(",")
          .map((s) => s.trim())
          .filter(Boolean),
        onProblem: (message) => log.warn({}, message),
        onNote: (message) => log.debug({}, message),
      });
      const key = opts.keyFile === undefined ? undefined : await readKeyFile(opts.keyFile);
      const running = await runAgent({
        agent,
        key,
        insecure: opts.insecure,
        natsCreds: opts.natsCreds,
        listen: opts.listen,
        connect: opts.connect,
        stdio: opts.stdio,
        payloadChecksum: opts.payloadChecksum,
        resumeWindowMs: opts.resumeWindow * 1000,
        drainTimeoutMs: opts.drainTimeout * 1000,
        limits: {
          maxSessions: opts.maxConnections,
          maxHandshaking: opts.maxPending,
          ...(opts.helloTimeout === undefined
            ? {}
            : { helloTimeoutMs: Math.ceil(opts.helloTimeout * 1000) }),
          maxStreams: opts.maxStreams,
          maxCalls: opts.maxCalls,
        },
        log,
      });
      // How exec starts commands: posix_spawn through the spawn addon, or child_process (why).
      const spawner = spawnAddon();
      log.info(
        {
          id: agent.id,
          addresses: running.addresses,
          services: [...agent.allowed],
          ...(filesRoot === undefined ? {} : { filesRoot: filesRoot.path }),
          ...("addon" in spawner
            ? { spawner: "posix_spawn" }
            : { spawner: "child_process", noTerminal: spawner.reason }),
        },
        "agent started",
      );
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        log.info(
          { signal },
          signals === 1
            ? `stopping: sessions finish their work (up to ${opts.drainTimeout} s, then their commands are killed)`
            : "stopping now: killing the commands",
        );
        void running.stop({ abort: signals > 1 });
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      await running.done;
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    });
}
