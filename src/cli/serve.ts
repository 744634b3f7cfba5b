/** `guestlink serve` and `guestlink ls`: the host daemon (src/daemon/) and its list of agents. */
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import type { ServeConfig } from "../daemon/config.ts";
import type { DaemonLog } from "../daemon/daemon.ts";
import type { AgentSnapshot } from "../daemon/held-agent.ts";
import { defaultSocketPath } from "../daemon/paths.ts";
import { ConfigInvalidError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { parseNatsServers } from "../transport/nats-address.ts";
import { printJson } from "./common.ts";
import { reportFailure } from "./failure.ts";
import { addGlobalOptions, jsonOutput, verboseOutput } from "./options.ts";

const EXIT_INVALID = 5;
const collect = (value: string, previous: string[]) => [...previous, value];

interface ServeOptions {
  config?: string;
  agent: string[];
  discover: string[];
  listen: string[];
  socket?: string;
  http?: string;
}

/** The config file (if any) with the flags added on top. Throws CONFIG_INVALID. */
async function serveConfig(opts: ServeOptions): Promise<ServeConfig> {
  // Loaded here, not with the CLI: the config brings the YAML reader and the checks.
  const [
    { checkAddress, checkHttp, checkPattern, parseServeConfig, readDialIn, readServeConfig },
    { CheckError },
  ] = await Promise.all([import("../daemon/config.ts"), import("../fleet/check.ts")]);
  let config: ServeConfig;
  if (opts.config !== undefined) {
    let text: string;
    try {
      text = await readFile(opts.config, "utf8");
    } catch (err) {
      throw new ConfigInvalidError(
        `${opts.config}: cannot read it (${(err as NodeJS.ErrnoException).code})`,
      );
    }
    config = parseServeConfig(text, opts.config);
  } else config = readServeConfig({});
  try {
    for (const spec of opts.agent) {
      const eq = spec.indexOf("=");
      if (eq <= 0) throw new CheckError("--agent", `${JSON.stringify(spec)}: write ID=ADDRESS`);
      const id = spec.slice(0, eq);
      const address = spec.slice(eq + 1);
      checkAddress(address, `--agent ${id}`);
      if (config.agents.some((a) => a.id === id))
        throw new CheckError("--agent", `${id} is named twice`);
      config.agents.push({ id, address, labels: {} });
    }
    for (const d of opts.discover) config.discover.push(checkPattern(d, "--discover"));
    for (const l of opts.listen) config.listen.push(readDialIn(l, "--listen"));
    if (opts.socket !== undefined) config.socket = opts.socket;
    if (opts.http !== undefined) config.http = checkHttp(opts.http, "--http");
  } catch (err) {
    if (err instanceof CheckError)
      throw new ConfigInvalidError(err.message, { details: { path: err.path } });
    throw err;
  }
  return config;
}

export function registerServe(program: Command): void {
  addGlobalOptions(program.command("serve"))
    .description(
      "run the host daemon: hold every agent of this host, with an HTTP API, metrics and a dashboard",
    )
    .option("--config <file>", "the daemon's config (YAML; docs/daemon.md)")
    .option("--agent <id=address>", "hold this agent (repeatable)", collect, [])
    .option(
      "--discover <pattern>",
      "hold an agent per socket matching, named by what * matched, or every agent on NATS servers (nats://HOST:PORT[/ID-PATTERN]), found live (repeatable)",
      collect,
      [],
    )
    .option(
      "--listen <address>",
      "let agents started with `agent --connect` dial in here (repeatable)",
      collect,
      [],
    )
    .option("--socket <path>", `the API's Unix socket (default ${defaultSocketPath()})`)
    .option(
      "--http <host:port>",
      "the API and dashboard on loopback TCP, or off (default 127.0.0.1:7780)",
    )
    .addHelpText(
      "after",
      `
Examples:
  guestlink serve --discover '/run/vms/*/agent.sock'
  guestlink serve --discover 'nats://nats.example:4222/io-*'
  guestlink serve --agent vm-1=unix:/run/vm-1.sock --listen tcp:127.0.0.1:7070
  guestlink exec @vm-1 -- uname -a          # any agent command, through the daemon
  guestlink ls

Exit status: 0 after SIGINT or SIGTERM; 5 when the config or a flag is invalid; 255 when it cannot
start (its socket or port in use).`,
    )
    .action(async (opts: ServeOptions) => {
      let config: ServeConfig;
      try {
        config = await serveConfig(opts);
      } catch (err) {
        if (!isGuestlinkError(err, "CONFIG_INVALID")) throw err;
        reportFailure(err, jsonOutput(), verboseOutput());
        process.exitCode = EXIT_INVALID;
        return;
      }
      const log = await logger();
      // Loaded here, not with the CLI: the daemon brings prom-client, ws and the dashboard.
      const { Daemon } = await import("../daemon/daemon.ts");
      const daemon = await Daemon.start(config, { log });
      log(
        "info",
        `daemon running: ${daemon.agents.size} agents; API on ${config.socket}${daemon.httpAddress ? ` and http://${daemon.httpAddress}/` : ""}`,
      );
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          log("info", `${signal}: stopping (again to exit at once)`);
          process.once(signal, () => process.exit(130));
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await daemon.close();
      log("info", "daemon stopped");
    });
}

async function logger(): Promise<DaemonLog> {
  if (process.stderr.isTTY !== true) {
    const { makeLogger } = await import("./logger.ts");
    const l = makeLogger(false, "info");
    return (level, message, fields) => l[level](fields ?? {}, message);
  }
  return (level, message) =>
    process.stderr.write(
      `${new Date().toISOString().slice(11, 19)} ${level === "warn" ? "WARN " : ""}${message}\n`,
    );
}

function ago(since: number): string {
  const s = Math.max(0, Math.round((Date.now() - since) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

export function registerLs(program: Command): void {
  addGlobalOptions(program.command("ls"))
    .description(
      "list the agents the daemon (guestlink serve) holds, or with --nats the agents on NATS servers",
    )
    .option(
      "--nats <servers>",
      "list the agents connected to these NATS servers (nats://HOST:PORT, or nats://HOST:PORT/ID-PATTERN with * in it)",
    )
    .option("--match <pattern>", "with --nats: only agents whose id matches (* for any characters)")
    .option("--nats-creds <file>", "with --nats: the NATS credentials file to log in with")
    .addHelpText(
      "after",
      `
The daemon's socket: $GUESTLINK_SOCKET, else the default (guestlink serve --help).

Examples:
  guestlink ls
  guestlink ls --nats nats://nats.example:4222 --match 'io-*'`,
    )
    .action(async (opts: { json?: boolean; nats?: string; match?: string; natsCreds?: string }) => {
      if (opts.nats !== undefined) {
        await listNatsAgents(opts.nats, opts);
        return;
      }
      if (opts.match !== undefined || opts.natsCreds !== undefined) {
        throw new InvalidOptionError(
          `${opts.match !== undefined ? "--match" : "--nats-creds"} goes with --nats nats://HOST:PORT`,
        );
      }
      const { daemonGet } = await import("../daemon/client.ts");
      const { agents } = (await daemonGet("/v1/agents")) as { agents: AgentSnapshot[] };
      if (opts.json) {
        printJson({ agents });
        return;
      }
      const rows = [
        ["ID", "STATE", "SINCE", "RTT", "RECONNECTS", "ADDRESS", "LAST ERROR"],
        ...agents.map((a) => [
          a.id,
          a.state,
          ago(a.since),
          a.rttMs === null ? "-" : `${a.rttMs.toFixed(2)}ms`,
          String(a.reconnects),
          a.address ?? `(dialled in)`,
          a.lastError === null || a.state === "up"
            ? ""
            : `${a.lastError.code}: ${a.lastError.message}`.slice(0, 72),
        ]),
      ];
      printRows(rows);
    });
}

function printRows(rows: readonly (readonly string[])[]): void {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  for (const row of rows)
    process.stdout.write(
      `${row
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd()}\n`,
    );
}

/** `ls --nats`: every agent that answers the NATS service protocol there (nats-service.ts). */
async function listNatsAgents(
  query: string,
  opts: { json?: boolean; match?: string; natsCreds?: string },
): Promise<void> {
  const { match, ...servers } = parseNatsServers(
    query,
    (problem) =>
      new InvalidOptionError(`--nats ${JSON.stringify(query)}: ${problem}`, {
        details: { option: "--nats" },
      }),
  );
  if (match !== undefined && opts.match !== undefined) {
    throw new InvalidOptionError(`give the id pattern once: in --nats or with --match, not both`);
  }
  const { findNatsAgents } = await import("../transport/nats-service.ts");
  const agents = await findNatsAgents(servers, {
    creds: opts.natsCreds,
    match: match ?? opts.match,
  });
  if (opts.json) {
    printJson({
      agents: agents.map((a) => ({
        id: a.id,
        address: a.description,
        version: a.version,
        metadata: a.metadata,
      })),
    });
    return;
  }
  printRows([
    ["ID", "ADDRESS", "HOST", "VERSION", "SESSIONS", "SERVICES"],
    ...agents.map((a) => [
      a.id,
      a.description,
      a.metadata.hostname ?? "",
      a.version,
      a.metadata.sessions ?? "",
      a.metadata.services ?? "",
    ]),
  ]);
}
