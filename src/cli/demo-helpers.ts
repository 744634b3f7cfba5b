/** The demo's helper processes: a pool of two JSON-RPC helpers, one of which crashes on purpose. */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { HelperEvent } from "../controller/helpers/helper.ts";
import { spawnHelpers } from "../controller/helpers/pool.ts";
import { isGuestlinkError } from "../errors.ts";

/** A helper as a user would write it: plain Node, JSON-RPC over its stdin and stdout. */
const HELPER = `
const rl = require("node:readline").createInterface({ input: process.stdin });
const out = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
rl.on("line", (line) => {
  const m = JSON.parse(line);
  if (m.method === "square") {
    if (m.params.n % 50 === 0) console.log("debug: squaring", m.params.n); // a stray print
    setTimeout(() => out({ jsonrpc: "2.0", id: m.id, result: m.params.n * m.params.n }), m.params.n % 7);
  } else if (m.method === "crash") {
    console.error("helper " + process.pid + ": crashing on purpose");
    process.exit(9);
  }
});
`;

export interface HelperDemoResult {
  requests: number;
  /** Answered on the first try, and how many of those were wrong. */
  answered: number;
  wrong: number;
  strays: number;
  /** Requests that were waiting in the crashed helper and failed with HELPER_EXITED. */
  failedOnExit: number;
  otherFailures: number;
  /** The failed ones asked again once the crashed helper was back: all answered right. */
  retriedOk: boolean;
  exitLine: string | undefined;
  restarted: boolean;
}

/** Runs `requests` squares, 32 at a time, over a pool of two helpers; one crashes halfway. */
export async function runHelperDemo(
  dir: string,
  requests: number,
  say: (line: string) => void,
): Promise<HelperDemoResult> {
  const script = join(dir, "square-helper.cjs");
  await writeFile(script, HELPER);
  say(`      spawnHelpers(2, { command: "node", args: ["${script}"], protocol: "jsonrpc" })`);
  const pool = spawnHelpers(2, {
    command: process.execPath,
    args: [script],
    protocol: "jsonrpc",
    restart: { backoff: { baseMs: 50, ceilingMs: 50 } },
  });
  let strays = 0;
  let exitLine: string | undefined;
  let restarted = false;
  pool.onEvent((e: HelperEvent, index) => {
    if (e.type === "stray") strays++;
    if (e.type === "exited") {
      exitLine = `helper ${index} exited with code ${e.code}, stderr "${e.stderrTail.at(-1) ?? ""}"`;
    }
    if (e.type === "ready" && exitLine !== undefined) restarted = true;
  });
  try {
    await pool.ready();
    let answered = 0;
    let wrong = 0;
    let otherFailures = 0;
    const failed: number[] = [];
    const square = async (n: number) => {
      try {
        const got = await pool.request("square", { n });
        answered++;
        if (got !== n * n) wrong++;
      } catch (err) {
        if (isGuestlinkError(err, "HELPER_EXITED")) failed.push(n);
        else otherFailures++;
      }
    };
    // 32 in flight at a time; at the halfway mark the first helper is told to crash with its
    // requests still waiting in it.
    let next = 0;
    const worker = async () => {
      while (next < requests) {
        const n = next++;
        if (n === Math.floor(requests / 2)) {
          void pool.helpers[0]?.request("crash").catch(() => {});
        }
        await square(n);
      }
    };
    const work = Array.from({ length: 32 }, worker);
    await Promise.all(work);
    await pool.ready();
    const retried = await Promise.all(failed.map((n) => pool.request("square", { n })));
    const retriedOk = retried.every((got, i) => got === (failed[i] as number) ** 2);
    return {
      requests,
      answered,
      wrong,
      strays,
      failedOnExit: failed.length,
      otherFailures,
      retriedOk,
      exitLine,
      restarted,
    };
  } finally {
    await pool.stop();
  }
}
