/**
 * Tests that need a program from the system (python3, jq, …) skip with a reason when it is
 * missing; with GUESTLINK_TOOLS_REQUIRED=1 (set by .ci/run, which installs them) a missing one
 * fails the test instead, so CI cannot pass by skipping.
 */
import { spawnSync } from "node:child_process";

/** `false` when every program runs (`NAME --version`); else the skip reason. */
export function requires(...programs: string[]): false | string {
  const missing = programs.filter(
    (p) => spawnSync(p, ["--version"], { stdio: "ignore" }).status !== 0,
  );
  if (missing.length === 0) return false;
  const reason = `needs ${missing.join(" and ")} (not found)`;
  if (process.env.GUESTLINK_TOOLS_REQUIRED === "1") {
    throw new Error(`${reason}, and GUESTLINK_TOOLS_REQUIRED=1 says it must run here`);
  }
  return reason;
}
