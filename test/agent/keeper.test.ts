/**
 * The keeper (agent/keeper.ts) in a process of its own that is SIGKILLed, as an agent can be:
 * what it was told over many commands, more list than one catch-up, must reach it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { CATCH_UP_BYTES } from "../../src/agent/keeper.ts";
import { until } from "../helpers/until.ts";

const FIXTURE = new URL("../fixtures/keeper-process.ts", import.meta.url).pathname;

/** A `sleep` leading a process group of its own. */
function group(): ChildProcess {
  const child = spawn("sleep", ["300"], { detached: true, stdio: "ignore" });
  child.unref();
  return child;
}

function alive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("the keeper", { skip: process.platform === "win32" && "no process groups" }, () => {
  it("kills the group still listed when its agent is SIGKILLed, and not one it was told to forget", async () => {
    const kept = group();
    const spared = group();
    // `+PGID\n-PGID\n` a round: several catch-ups' worth.
    const rounds = Math.ceil((4 * CATCH_UP_BYTES) / (2 * (String(spared.pid).length + 2)));
    const agent = spawn(
      process.execPath,
      ["--import", "tsx", FIXTURE, String(kept.pid), String(spared.pid), String(rounds)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      const lines = createInterface({ input: agent.stdout as NodeJS.ReadableStream });
      const [line] = (await once(lines, "line")) as [string];
      assert.match(line, /^ready \d+$/);
      assert.ok(alive(kept.pid as number));
      agent.kill("SIGKILL");
      await until("the kept group to be killed", () =>
        alive(kept.pid as number) ? undefined : true,
      );
      assert.ok(alive(spared.pid as number), "the group it was told to forget is left alone");
    } finally {
      agent.kill("SIGKILL");
      for (const child of [kept, spared]) {
        try {
          process.kill(-(child.pid as number), "SIGKILL");
        } catch {
          // gone
        }
      }
    }
  });
});
