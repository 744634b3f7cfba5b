/**
 * The demo's mediator: four VMs, each with a shared folder, submit to two pools with priorities;
 * every reply arrives once, and the waits per level show the weights at work.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { readMediatorConfig } from "../controller/mediator/config.ts";
import { Mediator, type MediatorStatus } from "../controller/mediator/mediator.ts";
import { submitWork } from "../controller/mediator/submit.ts";
import { openSession } from "../platform/session.ts";

/** The worker, as a user would write it (the guide has it in Python): JSON-RPC `run`, a+b. */
const WORKER = `
const rl = require("node:readline").createInterface({ input: process.stdin });
const runs = new Map();
rl.on("line", (line) => {
  const m = JSON.parse(line);
  const { input, guest, key } = m.params;
  runs.set(key, (runs.get(key) ?? 0) + 1);
  setTimeout(() => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id,
    result: { sum: input.a + input.b, guest, runs: runs.get(key) } }) + "\\n"), input.ms);
});
`;

export interface MediatorDemoResult {
  submitted: number;
  answered: number;
  wrong: number;
  /** Replies whose key had run more than once in its worker. */
  repeated: number;
  status: MediatorStatus;
}

export async function runMediatorDemo(
  dir: string,
  say: (line: string) => void,
): Promise<MediatorDemoResult> {
  const vms = ["vm-1", "vm-2", "vm-3", "vm-4"];
  const worker = join(dir, "mediator-worker.cjs");
  await writeFile(worker, WORKER);
  for (const vm of vms) await mkdir(join(dir, "vms", vm), { recursive: true });
  const config = readMediatorConfig({
    listen: [`mailbox:${join(dir, "vms")}/*/mediator`],
    pools: [
      {
        name: "A",
        slots: 2,
        priorities: 3,
        weights: [8, 3, 1],
        worker: { helper: [process.execPath, worker] },
      },
      { name: "B", worker: { helper: [process.execPath, worker] } },
    ],
  });
  say(
    `      listen: mailbox:${join(dir, "vms")}/*/mediator; pool A: 2 slots, weights 8:3:1; pool B: 1 slot`,
  );
  const mediator = await Mediator.start(config, { discoverPollMs: 100 });
  try {
    let answered = 0;
    let wrong = 0;
    let repeated = 0;
    let submitted = 0;
    await Promise.all(
      vms.map(async (vm, v) => {
        const session = await openSession(`mailbox:${join(dir, "vms", vm, "mediator")}`);
        try {
          const work: Promise<void>[] = [];
          for (let n = 0; n < 30; n++) {
            const pool = n % 5 === 4 ? "B" : "A";
            const priority = pool === "A" ? 1 + (n % 3) : 1;
            const input = { a: v * 1000, b: n, ms: 2 };
            submitted++;
            work.push(
              submitWork(session, pool, input, { priority, key: `${vm}-${n}` }).then((r) => {
                const result = r as { sum: number; guest: string; runs: number };
                answered++;
                if (result.sum !== input.a + input.b || result.guest !== vm) wrong++;
                if (result.runs !== 1) repeated++;
              }),
            );
          }
          await Promise.all(work);
        } finally {
          await session.close();
        }
      }),
    );
    return { submitted, answered, wrong, repeated, status: mediator.status() };
  } finally {
    await mediator.close();
  }
}
