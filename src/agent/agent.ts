/**
 * The agent: the guest-side services (exec, files, info, telemetry, workload) behind an allow-list. It
 * knows nothing of addresses; `run.ts` puts it on listeners, an outgoing connection or stdio.
 */
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { nodeClock } from "../platform/node.ts";
import type { NodeSessionOptions } from "../platform/session.ts";
import type { Clock } from "../session/runtime.ts";
import type { Handler, Session } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { CommandGroups } from "./command-groups.ts";
import { DEFAULT_KILL_GRACE_MS, execService } from "./exec.ts";
import { filesService } from "./files.ts";
import type { FilesRoot } from "./files-root.ts";
import { infoService } from "./info.ts";
import type { Service } from "./service.ts";
import { telemetryService } from "./telemetry.ts";
import { workloadService } from "./workload/service.ts";

/** Services every agent has, whatever its allow-list: ping costs nothing and reveals nothing. */
const ALWAYS_ALLOWED = "ping";

/** Services whose every call the agent reports (`onOperation`): what runs commands or touches files. */
const REPORTED_SERVICES: ReadonlySet<string> = new Set(["exec", "files", "workload"]);
/** Longest text of a request kept in a report (a command line, a path). */
const MAX_REPORTED_CHARS = 1024;

/** An exec or file operation, as the agent reports it when it starts and when it ends. */
export interface OperationReport {
  phase: "start" | "end";
  /** The method called (exec, files.get, files.put, …). */
  method: string;
  /** The peer's id and host name, as its HELLO gave them (its own word, not proof). */
  peer: string;
  host: string;
  /**
   * The connection the call came on: the peer's address (`tcp:IP:PORT`) or, for a Unix socket,
   * the address listened on.
   */
  address: string;
  /** On a keyed connection, the id of the key the peer proved it holds (tls.ts `keyId`). */
  keyId?: string;
  /** What was asked: `argv` and `cwd` of a command, the `path` of a file (cut at 1024 characters). */
  request: Record<string, unknown>;
  /** At the end: how long it took, and how it went (`code` of a failure, or what the result says). */
  ms?: number;
  code?: string;
  result?: Record<string, unknown>;
}

/** Methods that are steps of another: allowing the one allows them (a put ends in one of these). */
const STEPS_OF: Record<string, readonly string[]> = {
  "files.put": ["files.commit", "files.discard"],
};

export interface AgentOptions {
  /** The agent's id in handshakes (default: the host name). */
  id?: string;
  /**
   * What the agent serves: service names (`exec`: all its methods) and method names
   * (`files.get`); anything else is refused with POLICY_DENIED. Default: everything.
   */
  allow?: readonly string[];
  /** Extra options for the exec service. */
  exec?: { killGraceMs?: number };
  /** For fleet runs' workloads: the agent's clock (tests give agents skewed ones). */
  workload?: { clock?: Clock; preciseMs?: number };
  /**
   * Whether a keeper process (keeper.ts) kills the commands if this process dies without
   * stopping them (SIGKILL, a crash). Default true; without `/bin/sh` the agent runs without one.
   */
  keeper?: boolean;
  /** Told of a problem that weakens a guarantee (the keeper cannot run). */
  onProblem?: (message: string) => void;
  /** Told what is worth a debug log line (the keeper watching a group). */
  onNote?: (message: string) => void;
  /** Confines the files service to this folder (`--files-root`; files-root.ts). */
  filesRoot?: FilesRoot;
  /**
   * Told of every exec, file and workload call, when it starts and when it ends, with who asked
   * and over what (the CLI logs each as a line). A listener that throws is ignored.
   */
  onOperation?: (report: OperationReport) => void;
}

export class Agent {
  readonly id: string;
  /** Every service this agent knows, allowed or not. */
  readonly services: readonly Service[];
  /** Names of the services it serves, in whole or in part (what it advertises). */
  readonly allowed: ReadonlySet<string>;
  /** Names of the methods it serves. */
  readonly allowedMethods: ReadonlySet<string>;
  /** The process groups of the commands it runs, and the keeper that outlives it. */
  readonly commands: CommandGroups;
  /** Where the files service is confined, if it is. */
  readonly filesRoot: FilesRoot | undefined;
  readonly #onOperation: ((report: OperationReport) => void) | undefined;

  constructor(options: AgentOptions = {}) {
    this.id = options.id ?? hostname();
    this.filesRoot = options.filesRoot;
    this.#onOperation = options.onOperation;
    this.commands = new CommandGroups({
      killGraceMs: options.exec?.killGraceMs ?? DEFAULT_KILL_GRACE_MS,
      keeper: options.keeper,
      onProblem: options.onProblem,
      onNote: options.onNote,
    });
    const ping: Service = { name: ALWAYS_ALLOWED, methods: { ping: (params) => params ?? null } };
    this.services = [
      ping,
      execService({ ...options.exec, groups: this.commands }),
      filesService({ root: options.filesRoot }),
      infoService({ services: () => [...this.allowed] }),
      telemetryService(),
      workloadService({
        clock: options.workload?.clock ?? nodeClock,
        preciseMs: options.workload?.preciseMs,
        killGraceMs: options.exec?.killGraceMs,
        groups: this.commands,
      }),
    ];
    const methodsOf = new Map(this.services.map((s) => [s.name, Object.keys(s.methods)]));
    const serviceOf = new Map(
      this.services.flatMap((s) => Object.keys(s.methods).map((m) => [m, s.name] as const)),
    );
    const methods = new Set<string>(methodsOf.get(ALWAYS_ALLOWED));
    for (const name of options.allow ?? [...methodsOf.keys()]) {
      const whole = methodsOf.get(name);
      if (whole !== undefined) {
        for (const m of whole) methods.add(m);
      } else if (serviceOf.has(name)) {
        methods.add(name);
        for (const step of STEPS_OF[name] ?? []) methods.add(step);
      } else {
        throw new InvalidOptionError(
          `unknown service or method "${name}" in the allow-list; the services are ${[...methodsOf.keys()].filter((n) => n !== ALWAYS_ALLOWED).join(", ")}, and their methods ${[...serviceOf.keys()].filter((m) => serviceOf.get(m) !== ALWAYS_ALLOWED && m !== serviceOf.get(m)).join(", ")}`,
          { details: { option: "allow", value: name } },
        );
      }
    }
    this.allowedMethods = methods;
    this.allowed = new Set([...methods].map((m) => serviceOf.get(m) as string));
  }

  /** Identity and advertised services for the sessions this agent serves. */
  sessionOptions(): NodeSessionOptions {
    return {
      peer: { id: this.id, hostname: hostname(), version: VERSION },
      services: [...this.allowed],
    };
  }

  /**
   * Stops every command still running (SIGTERM to its group, SIGKILL after the grace) and ends
   * the keeper: for when the agent's sessions have ended and it is about to exit.
   */
  async stopCommands(): Promise<void> {
    await this.commands.stopAll();
    this.commands.close();
  }

  /**
   * Serves this agent's methods on `session`; denied ones answer POLICY_DENIED. When the
   * session ends without resume, what its commands left running is stopped.
   */
  attach(session: Session): void {
    void session.closed.then(() => this.commands.ownerEnded(session));
    for (const service of this.services) {
      const reported = this.#onOperation !== undefined && REPORTED_SERVICES.has(service.name);
      for (const [method, handler] of Object.entries(service.methods)) {
        const allowed = this.allowedMethods.has(method) ? handler : denied(service.name, method);
        session.handle(method, reported ? this.#reporting(allowed) : allowed);
      }
    }
  }

  /** `handler`, reporting each call to `onOperation` as it starts and ends. */
  #reporting(handler: Handler): Handler {
    const report = (r: OperationReport) => {
      try {
        this.#onOperation?.(r);
      } catch {
        // A broken listener must not break the call.
      }
    };
    return async (params, ctx) => {
      const session = ctx.session;
      const connection = session.connection;
      const who = {
        method: ctx.method,
        peer: session.peer?.id ?? "?",
        host: session.peer?.hostname ?? "?",
        address: connection?.description ?? "?",
        ...(connection?.keyId === undefined ? {} : { keyId: connection.keyId }),
      };
      report({ phase: "start", ...who, request: describeRequest(params) });
      const started = performance.now();
      const ms = () => Math.round((performance.now() - started) * 10) / 10;
      try {
        const value = await handler(params, ctx);
        report({ phase: "end", ...who, request: {}, ms: ms(), result: describeResult(value) });
        return value;
      } catch (err) {
        const code = isGuestlinkError(err)
          ? err.code
          : String((err as { code?: unknown } | undefined)?.code ?? "HANDLER_FAILED");
        report({ phase: "end", ...who, request: {}, ms: ms(), code });
        throw err;
      }
    };
  }
}

/** The parts of a request worth a log line, cut short: a command, a path, a size. */
function describeRequest(params: unknown): Record<string, unknown> {
  if (typeof params !== "object" || params === null) return {};
  const p = params as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if (Array.isArray(p.argv)) out.argv = cut(p.argv.map(String).join(" "));
  for (const key of ["path", "cwd", "name", "token", "stage"] as const) {
    if (typeof p[key] === "string") out[key] = cut(p[key] as string);
  }
  if (p.shell === true) out.shell = true;
  if (typeof p.size === "number") out.size = p.size;
  return out;
}

/** What a result says in a log line: an exit status, a path, a size. */
function describeResult(value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null) return {};
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of ["status", "reason", "size", "path", "sha256", "state"] as const) {
    const x = v[key];
    if (typeof x === "number" || typeof x === "boolean") out[key] = x;
    else if (typeof x === "string") out[key] = cut(x);
  }
  return out;
}

function cut(text: string): string {
  return text.length <= MAX_REPORTED_CHARS ? text : `${text.slice(0, MAX_REPORTED_CHARS)}…`;
}

function denied(service: string, method: string): Handler {
  const what = service === method ? `the "${service}" service` : `"${method}"`;
  return () => {
    throw new GuestlinkError("POLICY_DENIED", `this agent does not allow ${what}`, {
      details: { service, method },
    });
  };
}
