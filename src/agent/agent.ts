/**
 * The agent: the guest-side services (exec, files, info, telemetry) behind an allow-list. It
 * knows nothing of addresses; `run.ts` puts it on listeners, an outgoing connection or stdio.
 */
import { hostname } from "node:os";
import { GuestlinkError, InvalidOptionError } from "../errors.ts";
import { nodeClock } from "../platform/node.ts";
import type { NodeSessionOptions } from "../platform/session.ts";
import type { Clock } from "../session/runtime.ts";
import type { Handler, Session } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { execService } from "./exec.ts";
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
  workload?: { clock?: Clock; spinMs?: number };
}

export class Agent {
  readonly id: string;
  /** Every service this agent knows, allowed or not. */
  readonly services: readonly Service[];
  /** Names of the services it serves. */
  readonly allowed: ReadonlySet<string>;

  constructor(options: AgentOptions = {}) {
    this.id = options.id ?? hostname();
    const ping: Service = { name: ALWAYS_ALLOWED, methods: { ping: (params) => params ?? null } };
    this.services = [
      ping,
      execService(options.exec),
      filesService(),
      infoService({ services: () => [...this.allowed] }),
      telemetryService(),
      workloadService({
        clock: options.workload?.clock ?? nodeClock,
        spinMs: options.workload?.spinMs,
        killGraceMs: options.exec?.killGraceMs,
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

  /** Serves this agent's methods on `session`; denied services answer POLICY_DENIED. */
  attach(session: Session): void {
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
