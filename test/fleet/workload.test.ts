/**
 * The agent's workload service, driven by the controller's side of it, over a real Unix socket:
 * what a fleet run does to each agent, one stage at a time.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import {
  agentTime,
  configureStage,
  runStage,
  type StatsRecord,
} from "../../src/controller/run/agent-link.ts";
import type { Stage } from "../../src/controller/run/plan.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { decodeHistogram } from "../../src/fleet/histogram.ts";
import type { Workload } from "../../src/fleet/workload.ts";
import { openSession } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { processesMatching } from "../helpers/processes.ts";

const silent = { info() {}, warn() {}, error() {}, debug() {} };
let dir: string;
let agent: RunningAgent;
let session: Session;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-workload-"));
  const address = `unix:${join(dir, "agent.sock")}`;
  agent = await runAgent({ agent: new Agent({ id: "w1" }), listen: [address], log: silent });
  session = await openSession(address);
});
after(async () => {
  await session.close();
  await agent.stop();
  await rm(dir, { recursive: true, force: true });
});

const stage = (name: string, workload: Workload, durationMs?: number): Stage => ({
  name,
  barrier: { kind: "all" },
  timeoutMs: undefined,
  durationMs,
  workload,
});

/** Configures and runs `s` now; its records and outcome. */
async function run(s: Stage, output?: Map<string, PassThrough>) {
  await configureStage(session, s, Infinity);
  const records: StatsRecord[] = [];
  const started = runStage(
    session,
    s.name,
    await agentTime(session, Infinity),
    50,
    (r) => records.push(r),
    output === undefined
      ? undefined
      : (n, which) => {
          const sink = new PassThrough();
          output.set(`${n}:${which}`, sink);
          return sink;
        },
  );
  return { records, outcome: await started.outcome };
}

const total = (records: StatsRecord[], op: keyof StatsRecord["ops"]) =>
  records.reduce(
    (sum, r) => {
      const o = r.ops[op];
      if (o === undefined) return sum;
      const h = decodeHistogram(o.histogram);
      return {
        count: sum.count + o.count,
        errors: sum.errors + o.errors,
        bytes: sum.bytes + o.bytes,
        latencies: sum.latencies + h.totalCount,
      };
    },
    { count: 0, errors: 0, bytes: 0, latencies: 0 },
  );

describe("the workload service", () => {
  it("runs an io stage: one pass over the files by default, every operation counted once", async () => {
    const folder = join(dir, "io");
    const io: Workload = {
      kind: "io",
      dir: folder,
      files: 8,
      size: 4096,
      concurrency: 3,
      mix: { write: 1 },
      count: undefined,
    };
    const { records, outcome } = await run(stage("prepare", io));
    assert.equal(outcome.state, "COMPLETED");
    assert.equal(outcome.records, records.length);
    assert.deepEqual(
      records.map((r) => r.seq),
      records.map((_, i) => i),
    );
    assert.deepEqual(total(records, "write"), {
      count: 8,
      errors: 0,
      bytes: 8 * 4096,
      latencies: 8,
    });
    const files = (await readdir(folder)).sort();
    assert.equal(files.length, 8);
    for (const f of files) assert.equal((await stat(join(folder, f))).size, 4096);

    const mixed = await run(stage("main", { ...io, mix: { read: 3, stat: 1 }, count: 200 }));
    assert.equal(mixed.outcome.state, "COMPLETED");
    const reads = total(mixed.records, "read");
    const stats = total(mixed.records, "stat");
    assert.equal(reads.count + stats.count, 200);
    assert.equal(reads.errors + stats.errors, 0);
    assert.equal(reads.bytes, reads.count * 4096);
  });

  it("counts failed operations as errors, with samples of why", async () => {
    const io: Workload = {
      kind: "io",
      dir: join(dir, "empty"),
      files: 4,
      size: 0,
      concurrency: 1,
      mix: { read: 1 },
      count: undefined,
    };
    const { records, outcome } = await run(stage("missing", io));
    assert.equal(outcome.state, "COMPLETED");
    assert.deepEqual(total(records, "read"), { count: 4, errors: 4, bytes: 0, latencies: 4 });
    assert.match(
      records.flatMap((r) => r.errorSamples ?? []).join("\n"),
      /read .*guestlink-0\.dat: ENOENT/,
    );
  });

  it("runs a command stage, its output demuxed by run and stream, its failures counted", async () => {
    const output = new Map<string, PassThrough>();
    const texts = new Map<string, Promise<string>>();
    const command: Workload = {
      kind: "command",
      argv: ["sh", "-c", 'echo "out $$"; echo err >&2; exit $(( $$ % 2 ))'],
      concurrency: 2,
      count: 6,
    };
    const { records, outcome } = await run(
      stage("cmd", command),
      new Proxy(output, {
        get(target, key, receiver) {
          if (key === "set") {
            return (k: string, sink: PassThrough) => {
              texts.set(
                k,
                new Promise((resolve) => {
                  let text = "";
                  sink.on("data", (c: Buffer) => {
                    text += c.toString();
                  });
                  sink.on("end", () => resolve(text));
                }),
              );
              return target.set(k, sink);
            };
          }
          return Reflect.get(target, key, receiver);
        },
      }),
    );
    assert.equal(outcome.state, "COMPLETED");
    const runs = total(records, "run");
    assert.equal(runs.count, 6);
    for (let n = 0; n < 6; n++) {
      assert.match(await (texts.get(`${n}:stdout`) as Promise<string>), /^out \d+\n$/);
      assert.equal(await texts.get(`${n}:stderr`), "err\n");
    }
    const odd = (
      await Promise.all([...Array(6).keys()].map((n) => texts.get(`${n}:stdout`)))
    ).filter((t) => Number(t?.split(" ")[1]) % 2 === 1).length;
    assert.equal(runs.errors, odd, "a non-zero exit is an error");

    const missing = await run(
      stage("nocmd", { kind: "command", argv: ["/nonexistent/tool"], concurrency: 1, count: 2 }),
    );
    assert.deepEqual(total(missing.records, "run").errors, 2);
    assert.match(
      missing.records.flatMap((r) => r.errorSamples ?? []).join(),
      /could not start \(ENOENT\)/,
    );
  });

  it("aborts a running stage: the agent kills its processes and confirms ABORTED", async () => {
    // sh stays (something follows the sleep) and so does its child sleep, both in the run's group;
    // the sleep's unusual length tells its processes from any other.
    const marker = `sleep 99${process.pid}`;
    const s = stage(
      "long",
      { kind: "command", argv: ["sh", "-c", `${marker}; true`], concurrency: 2, count: undefined },
      600_000,
    );
    await configureStage(session, s, Infinity);
    const records: StatsRecord[] = [];
    const running = runStage(session, s.name, await agentTime(session, Infinity), 50, (r) =>
      records.push(r),
    );
    const seen = () => processesMatching(marker).length;
    // Two sh and two sleep processes.
    for (let i = 0; i < 200 && seen() < 4; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(seen(), 4, "both runs are running");
    const outcome = await running.abort();
    assert.equal(outcome.state, "ABORTED");
    assert.equal(seen(), 0, "no process of the stage is left");
    assert.equal(total(records, "run").errors, 2, "the killed runs count as failed");
  });

  it("starts no earlier than the instant it was given, in its own clock", async () => {
    const s = stage("timed", {
      kind: "io",
      dir: join(dir, "t"),
      files: 1,
      size: 1,
      concurrency: 1,
      mix: { write: 1 },
      count: 1,
    });
    await configureStage(session, s, Infinity);
    const at = (await agentTime(session, Infinity)) + 150;
    const outcome = await runStage(session, s.name, at, 50, () => {}).outcome;
    assert.ok((outcome.startedAtMs as number) >= at, `started ${outcome.startedAtMs} >= ${at}`);
  });

  it("refuses to run what is not READY, and a workload it cannot run, naming the field", async () => {
    await assert.rejects(
      runStage(session, "never-configured", 0, 50, () => {}).outcome,
      (err: unknown) =>
        isGuestlinkError(err, "INVALID_OPTION") && /not READY on this agent/.test(err.message),
    );
    await assert.rejects(
      session.call("workload.configure", {
        stage: "x",
        workload: { kind: "io", dir: "/tmp", files: 0, size: 1, concurrency: 1, mix: { read: 1 } },
      }),
      (err: unknown) =>
        isGuestlinkError(err, "INVALID_OPTION") && /workload\.files/.test(err.message),
    );
    const blocked = join(dir, "file-not-folder");
    await writeFile(blocked, "");
    await assert.rejects(
      configureStage(
        session,
        stage("bad", {
          kind: "io",
          dir: join(blocked, "sub"),
          files: 1,
          size: 1,
          concurrency: 1,
          mix: { write: 1 },
          count: 1,
        }),
        Infinity,
      ),
      (err: unknown) =>
        isGuestlinkError(err) && /cannot be prepared on this agent/.test(err.message),
    );
  });
});
