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
      for (const [method, handler] of Object.entries(service.methods)) {
        session.handle(
          method,
          this.allowedMethods.has(method) ? handler : denied(service.name, method),
        );
      }
    }
  }
}

function denied(service: string, method: string): Handler {
  const what = service === method ? `the "${service}" service` : `"${method}"`;
  return () => {
    throw new GuestlinkError("POLICY_DENIED", `this agent does not allow ${what}`, {
      details: { service, method },
    });
  };
}
