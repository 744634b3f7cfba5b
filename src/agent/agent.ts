/**
 * The agent: the guest-side services (exec, files, info, telemetry, workload) behind an allow-list. It
 * knows nothing of addresses; `run.ts` puts it on listeners, an outgoing connection or stdio.
 */
import { hostname } from "node:os";
import { GuestlinkError, InvalidOptionError } from "../errors.ts";
import { nodeClock } from "../platform/node.ts";
import type { NodeSessionOptions } from "../platform/session.ts";
import type { Clock } from "../session/runtime.ts";
import type { Handler, Session } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { CommandGroups } from "./command-groups.ts";
import { DEFAULT_KILL_GRACE_MS, execService } from "./exec.ts";
import { filesService } from "./files.ts";
import { infoService } from "./info.ts";
import type { Service } from "./service.ts";
import { telemetryService } from "./telemetry.ts";
import { workloadService } from "./workload/service.ts";

/** Services every agent has, whatever its allow-list: ping costs nothing and reveals nothing. */
const ALWAYS_ALLOWED = "ping";

export interface AgentOptions {
  /** The agent's id in handshakes (default: the host name). */
  id?: string;
  /** Service names the agent serves; anything else is refused with POLICY_DENIED. Default: all. */
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
}

export class Agent {
  readonly id: string;
  /** Every service this agent knows, allowed or not. */
  readonly services: readonly Service[];
  /** Names of the services it serves. */
  readonly allowed: ReadonlySet<string>;
  /** The process groups of the commands it runs, and the keeper that outlives it. */
  readonly commands: CommandGroups;

  constructor(options: AgentOptions = {}) {
    this.id = options.id ?? hostname();
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
      filesService(),
      infoService({ services: () => [...this.allowed] }),
      telemetryService(),
      workloadService({
        clock: options.workload?.clock ?? nodeClock,
        preciseMs: options.workload?.preciseMs,
        killGraceMs: options.exec?.killGraceMs,
        groups: this.commands,
      }),
    ];
    const known = new Set(this.services.map((s) => s.name));
    const allow = options.allow ?? [...known];
    for (const name of allow) {
      if (!known.has(name)) {
        throw new InvalidOptionError(
          `unknown service "${name}" in the allow-list; the services are ${[...known].filter((n) => n !== ALWAYS_ALLOWED).join(", ")}`,
          { details: { option: "allow", value: name } },
        );
      }
    }
    this.allowed = new Set([ALWAYS_ALLOWED, ...allow]);
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
   * Serves this agent's methods on `session`; denied services answer POLICY_DENIED. When the
   * session ends without resume, what its commands left running is stopped.
   */
  attach(session: Session): void {
    void session.closed.then(() => this.commands.ownerEnded(session));
    for (const service of this.services) {
      const allowed = this.allowed.has(service.name);
      for (const [method, handler] of Object.entries(service.methods)) {
        session.handle(method, allowed ? handler : denied(service.name));
      }
    }
  }
}

function denied(service: string): Handler {
  return () => {
    throw new GuestlinkError(
      "POLICY_DENIED",
      `this agent does not allow the "${service}" service`,
      {
        details: { service },
      },
    );
  };
}
