/**
 * A fleet run's state machines, deterministically: agents on in-memory session pairs, every
 * clock a fake one (each agent's wall clock skewed as on another machine), time moved by hand.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type FleetResult, FleetRun, type RunEvent } from "../../src/controller/run/fleet.ts";
import { EXIT } from "../../src/controller/run/outcome.ts";
import { parsePlan } from "../../src/controller/run/plan.ts";
import { GuestlinkError } from "../../src/errors.ts";
import type { Clock } from "../../src/session/runtime.ts";
import { Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FakeClock, fakeRuntime, skewedClock } from "../helpers/fake-clock.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-fleet-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** How an agent behaves: a real one (with a skewed clock), or handlers set up by the test. */
type Behaviour =
  | { real: true; skewMs?: number }
  | { unreachable: true }
  | { setup: (server: Session, clock: Clock) => void; skewMs?: number };

interface Harness {
  clock: FakeClock;
  events: RunEvent[];
  run: FleetRun;
  servers: Map<string, Session>;
  /** Runs to the end, moving time in steps; `during` may act between steps. */
  finish(during?: (elapsedMs: number) => void): Promise<FleetResult>;
}

function harness(yaml: string, behaviours: Record<string, Behaviour>): Harness {
  const clock = new FakeClock();
  const events: RunEvent[] = [];
  const servers = new Map<string, Session>();
  const plan = parsePlan(yaml, "plan.yaml");
  const run = new FleetRun({
    plan,
    clock,
    intervalMs: 1000,
    onEvent: (e) => events.push(e),
    async connect(agent) {
      const behaviour = behaviours[agent.id] as Behaviour;
      if ("unreachable" in behaviour) {
        throw new GuestlinkError("CONNECT_FAILED", `no agent listening at ${agent.address}`);
      }
      const agentClock = skewedClock(clock, behaviour.skewMs ?? 0);
      const [a, b] = memoryPair({ highWaterMark: 1 << 20 });
      const client = new Session(a, {
        role: "client",
        runtime: fakeRuntime(clock),
        peer: { id: "controller", hostname: "h", version: "t" },
      });
      const server = new Session(b, {
        role: "server",
        runtime: fakeRuntime(clock),
        peer: { id: agent.id, hostname: agent.id, version: "t" },
      });
      servers.set(agent.id, server);
      if ("real" in behaviour) {
        new Agent({ id: agent.id, workload: { clock: agentClock, preciseMs: 0 } }).attach(server);
      } else {
        server.handle("workload.time", () => ({ wallMs: agentClock.wallNow() }));
        behaviour.setup(server, agentClock);
      }
      await client.ready;
      return client;
    },
  });
  return {
    clock,
    events,
    run,
    servers,
    async finish(during) {
      let done: FleetResult | undefined;
      const result = run.run().then((r) => {
        done = r;
        return r;
      });
      for (let elapsed = 0; done === undefined && elapsed < 3_600_000; elapsed += 250) {
        during?.(elapsed);
        await clock.advance(250);
      }
      return await result;
    },
  };
}

const agentsYaml = (ids: string[]) =>
  `agents:\n${ids.map((id) => `  - { id: ${id}, address: "unix:/run/${id}.sock" }`).join("\n")}\n`;

let folders = 0;
/** A stage of io on 4 files; stages of one plan share a folder (`folder`: a new one). */
const ioStage = (name: string, op: string, extra = "", folder = op === "write") => {
  if (folder) folders++;
  return `  - name: ${name}\n    ${extra}\n    workload: { io: { dir: ${dir}/f${folders}, files: 4, size: 1KiB, op: ${op} } }\n`;
};

/** Each agent's states in `stage`, in order. */
function path(events: RunEvent[], agent: string, stage: string): string[] {
  const moves = events.flatMap((e) =>
    e.type === "state" && e.change.agent === agent && e.change.stage === stage ? [e.change] : [],
  );
  return moves.length === 0 ? [] : [moves[0]?.from as string, ...moves.map((m) => m.to)];
}

const stateOf = (r: FleetResult, agent: string, stage: string) =>
  r.agents.find((a) => a.id === agent)?.stages.get(stage);

describe("a fleet run", () => {
  it("takes every agent through every state once, READY once, and starts them at one instant across skewed clocks", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["a", "b", "c"])}start_delay: 2s\nstages:\n${ioStage("write", "write")}${ioStage("read", "read")}`,
      { a: { real: true }, b: { real: true, skewMs: 4_000 }, c: { real: true, skewMs: -7_500 } },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "completed");
    assert.equal(EXIT[r.outcome], 0);
    for (const id of ["a", "b", "c"]) {
      assert.deepEqual(path(h.events, id, "write"), [
        "CONNECTING",
        "CONFIGURED",
        "READY",
        "START_SENT",
        "RUNNING",
        "COMPLETED",
      ]);
      assert.deepEqual(path(h.events, id, "read"), [
        "CONFIGURED",
        "READY",
        "START_SENT",
        "RUNNING",
        "COMPLETED",
      ]);
    }
    const offsets = Object.fromEntries(r.agents.map((a) => [a.id, a.offset?.offsetMs]));
    assert.deepEqual(offsets, { a: 0, b: 4_000, c: -7_500 });
    for (const stage of ["write", "read"]) {
      const starts = r.agents.map((a) => a.startedAtMs.get(stage));
      assert.deepEqual(
        starts,
        starts.map(() => r.startAtMs.get(stage)),
        "all started at the instant, in our clock",
      );
    }
    assert.equal(r.stats.stages.get("write")?.ops.get("write")?.count, 12);
    assert.equal(r.stats.stages.get("read")?.ops.get("read")?.count, 12);
    assert.equal(r.stats.stages.get("read")?.ops.get("read")?.errors, 0);
  });

  it("fails an agent whose clock is off by more than max_skew, and goes on when the barrier allows (partial)", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["a", "b", "c"])}clock: { max_skew: 5s }\nstages:\n${ioStage("s", "write", "barrier: { min: 2 }")}`,
      { a: { real: true }, b: { real: true, skewMs: 6_000 }, c: { real: true, skewMs: 1_000 } },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "partial");
    assert.equal(EXIT[r.outcome], 2);
    assert.equal(stateOf(r, "b", "s")?.state, "FAILED");
    assert.equal(stateOf(r, "b", "s")?.cause, "clock-skew");
    assert.match(
      stateOf(r, "b", "s")?.reason as string,
      /6\.000 s off ours, more than clock\.max_skew \(5 s\)/,
    );
    assert.equal(stateOf(r, "c", "s")?.state, "COMPLETED");
  });

  it("ends with 'unreachable' (exit 4) when agents cannot be reached and the first barrier needs them", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["a", "b"])}timeouts: { connect: 3s }\nstages:\n${ioStage("s", "write")}`,
      {
        a: { real: true },
        b: { unreachable: true },
      },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "unreachable");
    assert.equal(EXIT[r.outcome], 4);
    assert.equal(stateOf(r, "b", "s")?.cause, "unreachable");
    assert.match(
      stateOf(r, "b", "s")?.reason as string,
      /not reached within 3000 ms: no agent listening/,
    );
    assert.match(r.reason as string, /barrier \(all\) needs 2 of 2 agents, and 1 can go on/);
  });

  it("fails an agent not READY within timeouts.ready: the run ends with 'timeout' (exit 6) under barrier all", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["a", "slow"])}timeouts: { ready: 4s }\nstages:\n${ioStage("s", "write")}`,
      {
        a: { real: true },
        slow: { setup: (s) => s.handle("workload.configure", () => new Promise(() => {})) },
      },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "timeout");
    assert.equal(EXIT[r.outcome], 6);
    assert.equal(stateOf(r, "slow", "s")?.cause, "ready-timeout");
    assert.deepEqual(path(h.events, "slow", "s"), ["CONNECTING", "CONFIGURED", "FAILED"]);
    assert.deepEqual(r.stagesRun, [], "no stage started");
  });

  it("shows a RUNNING agent that sends no stats as stalled, not dead, and it completes", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["quiet"])}timeouts: { silence: 3s }\nstages:\n${ioStage("s", "write")}`,
      {
        quiet: {
          setup(s, clock) {
            s.handle("workload.configure", () => ({ state: "READY" }));
            s.handle("workload.run", async (_p, ctx) => {
              const stats = ctx.streams
                .stats as import("../../src/session/stream.ts").SessionStream;
              const record = (seq: number) =>
                Buffer.from(
                  `${JSON.stringify({ stage: "s", seq, startMs: clock.wallNow(), endMs: clock.wallNow(), ops: {} })}\n`,
                );
              stats.write(record(0));
              await new Promise<void>((resolve) => clock.setTimer(10_000, resolve));
              stats.write(record(1));
              stats.end();
              return {
                state: "COMPLETED",
                startedAtMs: clock.wallNow(),
                endedAtMs: clock.wallNow(),
                records: 2,
              };
            });
          },
        },
      },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "completed");
    const stalls = h.events.flatMap((e) => (e.type === "stalled" ? [e.stalled] : []));
    assert.deepEqual(stalls, [true, false]);
  });

  it("aborts agents that outlive the stage's timeout: FAILED stage-timeout, exit 6", async () => {
    const h = harness(
      `name: t\n${agentsYaml(["a", "stuck"])}stages:\n  - name: s\n    timeout: 20s\n    duration: 5s\n    workload: { io: { dir: ${dir}/st, files: 2, size: 1, op: write } }\n`,
      {
        a: { real: true },
        stuck: {
          setup(s, clock) {
            s.handle("workload.configure", () => ({ state: "READY" }));
            s.handle(
              "workload.run",
              (_p, ctx) =>
                new Promise((resolve) => {
                  ctx.signal.addEventListener("abort", () => {
                    ctx.streams.stats?.end();
                    resolve({ state: "ABORTED", endedAtMs: clock.wallNow(), records: 0 });
                  });
                }),
            );
          },
        },
      },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "timeout");
    assert.equal(stateOf(r, "stuck", "s")?.cause, "stage-timeout");
    assert.equal(stateOf(r, "a", "s")?.state, "COMPLETED");
  });

  it("fails an agent whose outcome counts more stats records than arrived, or that sends a bad one", async () => {
    const scripted = (records: number, line: (clock: Clock) => string) => ({
      setup(s: Session, clock: Clock) {
        s.handle("workload.configure", () => ({ state: "READY" }));
        s.handle("workload.run", async (_p, ctx) => {
          ctx.streams.stats?.write(Buffer.from(line(clock)));
          ctx.streams.stats?.end();
          return {
            state: "COMPLETED",
            startedAtMs: clock.wallNow(),
            endedAtMs: clock.wallNow(),
            records,
          };
        });
      },
    });
    const good = (clock: Clock) =>
      `${JSON.stringify({ stage: "s", seq: 0, startMs: clock.wallNow(), endMs: clock.wallNow(), ops: {} })}\n`;
    const h = harness(
      `name: t\n${agentsYaml(["short", "liar", "ok"])}stages:\n${ioStage("s", "write", "barrier: best_effort")}`,
      {
        short: scripted(3, good),
        liar: scripted(
          1,
          (clock) =>
            `${JSON.stringify({ stage: "s", seq: 0, startMs: clock.wallNow(), endMs: clock.wallNow(), ops: { read: { count: 5, errors: 0, bytes: 0, histogram: "AAAA" } } })}\n`,
        ),
        ok: scripted(1, good),
      },
    );
    const r = await h.finish();
    assert.equal(r.outcome, "partial");
    assert.match(
      stateOf(r, "short", "s")?.reason as string,
      /it sent 3 stats records and 1 arrived/,
    );
    assert.match(
      stateOf(r, "liar", "s")?.reason as string,
      /sent a bad stats record: not a compressed HdrHistogram/,
    );
    assert.equal(stateOf(r, "ok", "s")?.state, "COMPLETED");
  });

  for (const phase of ["connecting", "configuring", "running"] as const) {
    it(`loses an agent while ${phase}: it fails as lost, the others go on (partial)`, async () => {
      const h = harness(
        `name: t\n${agentsYaml(["a", "b", "gone"])}stages:\n${ioStage(`lost-${phase}`, "write", "barrier: majority")}`,
        {
          a: { real: true },
          b: { real: true },
          gone: {
            setup(s) {
              const die = () => {
                s.abort(new GuestlinkError("TRANSPORT_FAILED", "the agent's VM died"));
                return new Promise(() => {});
              };
              if (phase === "connecting") s.handle("workload.time", die);
              s.handle(
                "workload.configure",
                phase === "configuring" ? die : () => ({ state: "READY" }),
              );
              s.handle("workload.run", die);
            },
          },
        },
      );
      const r = await h.finish();
      assert.equal(r.outcome, "partial");
      const gone = stateOf(r, "gone", `lost-${phase}`);
      assert.equal(gone?.state, "FAILED");
      assert.ok(
        gone?.cause === "lost" || gone?.cause === "error",
        `${gone?.cause}: ${gone?.reason}`,
      );
      assert.equal(stateOf(r, "a", `lost-${phase}`)?.state, "COMPLETED");
    });
  }

  for (const phase of ["connecting", "configuring", "running"] as const) {
    it(`aborts while ${phase}: every agent ends ABORTED and the run 'aborted' (exit 3)`, async () => {
      const hang = () => new Promise(() => {});
      const h = harness(
        `name: t\n${agentsYaml(["a", "b"])}timeouts: { connect: 60s }\nstages:\n  - name: s\n    duration: 600s\n    workload: { io: { dir: ${dir}/ab, files: 2, size: 1, op: write } }\n`,
        {
          a: { real: true },
          b:
            phase === "connecting"
              ? { unreachable: true }
              : phase === "configuring"
                ? { setup: (s) => s.handle("workload.configure", hang) }
                : { real: true },
        },
      );
      const r = await h.finish((elapsed) => {
        if (elapsed === 5_000) h.run.abort();
      });
      assert.equal(r.outcome, "aborted");
      assert.equal(EXIT[r.outcome], 3);
      for (const id of ["a", "b"]) {
        const s = stateOf(r, id, "s");
        assert.equal(s?.state, "ABORTED", `${id}: ${s?.state} ${s?.reason}`);
      }
    });
  }
});
