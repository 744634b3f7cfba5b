/**
 * The controller's view of each agent in each stage of a fleet run, as a state machine whose
 * every move is checked against the table below (docs/fleet.md draws it):
 *
 *   CONNECTING → CONFIGURED → READY → START_SENT → RUNNING → COMPLETED | FAILED | ABORTED
 *
 * CONNECTING is only the first stage's (the session is kept for the next ones, which begin at
 * CONFIGURED). Any state that is not final may become FAILED (an error, a timeout, a lost
 * session) or ABORTED (Ctrl-C). A move the table does not allow is a bug, thrown as such, so a
 * READY can never be counted twice.
 */

export const CONTROLLER_STATES = [
  "CONNECTING",
  "CONFIGURED",
  "READY",
  "START_SENT",
  "RUNNING",
  "COMPLETED",
  "FAILED",
  "ABORTED",
] as const;
export type ControllerState = (typeof CONTROLLER_STATES)[number];

export const FINAL_STATES: ReadonlySet<ControllerState> = new Set([
  "COMPLETED",
  "FAILED",
  "ABORTED",
]);

const FORWARD: Readonly<Record<ControllerState, readonly ControllerState[]>> = {
  CONNECTING: ["CONFIGURED"],
  CONFIGURED: ["READY"],
  READY: ["START_SENT"],
  START_SENT: ["RUNNING"],
  RUNNING: ["COMPLETED"],
  COMPLETED: [],
  FAILED: [],
  ABORTED: [],
};

/** Whether the table allows `from` → `to`. */
export function canMove(from: ControllerState, to: ControllerState): boolean {
  if (FINAL_STATES.has(from)) return false;
  if (to === "FAILED" || to === "ABORTED") return true;
  return FORWARD[from].includes(to);
}

/** Why an agent is where it is: kept for the summary. */
export interface StateChange {
  agent: string;
  stage: string;
  from: ControllerState;
  to: ControllerState;
  /** For FAILED and ABORTED: what happened, one line. */
  reason?: string;
  /** A stable cause: unreachable, clock-skew, ready-timeout, stage-timeout, lost, error, aborted. */
  cause?: FailureCause;
}

export type FailureCause =
  | "unreachable"
  | "clock-skew"
  | "ready-timeout"
  | "stage-timeout"
  | "lost"
  | "error"
  | "aborted";

/** One agent in one stage. */
export class AgentStage {
  readonly agent: string;
  readonly stage: string;
  #state: ControllerState;
  reason: string | undefined;
  cause: FailureCause | undefined;
  readonly #onChange: (change: StateChange) => void;

  constructor(
    agent: string,
    stage: string,
    first: ControllerState,
    onChange: (c: StateChange) => void,
  ) {
    this.agent = agent;
    this.stage = stage;
    this.#state = first;
    this.#onChange = onChange;
  }

  get state(): ControllerState {
    return this.#state;
  }

  get final(): boolean {
    return FINAL_STATES.has(this.#state);
  }

  /** Moves to `to`; throws if the table does not allow it (a bug in the controller). */
  move(to: ControllerState): void {
    if (!canMove(this.#state, to)) {
      throw new Error(
        `${this.agent}/${this.stage}: ${this.#state} -> ${to} is not a move a fleet run makes`,
      );
    }
    const from = this.#state;
    this.#state = to;
    this.#onChange({ agent: this.agent, stage: this.stage, from, to });
  }

  /** Ends in FAILED or ABORTED with why, unless already final (then nothing happens). */
  end(to: "FAILED" | "ABORTED", cause: FailureCause, reason: string): void {
    if (this.final) return;
    const from = this.#state;
    this.#state = to;
    this.reason = reason;
    this.cause = cause;
    this.#onChange({ agent: this.agent, stage: this.stage, from, to, reason, cause });
  }
}
