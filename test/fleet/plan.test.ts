import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { parsePlan } from "../../src/controller/run/plan.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { formatDuration, parseDuration, parseSize } from "../../src/fleet/units.ts";

const SMOKE = `
name: smoke
agents:
  - { id: vm-1, address: "unix:/run/vm-1.sock" }
  - { id: vm-2, address: "tcp:10.0.0.2:7070" }
start_delay: 2s
clock: { max_skew: 10s }
timeouts: { connect: 10s, ready: 30s, silence: 10s }
stages:
  - name: prepare
    barrier: all
    timeout: 5m
    workload:
      io: { dir: /tmp/bench, files: 64, size: 1MiB, op: write }
  - name: main
    duration: 30s
    barrier: { min: 2 }
    workload:
      io: { dir: /tmp/bench, files: 64, size: 64KiB, concurrency: 8, mix: { read: 70, write: 30 } }
  - name: probe
    workload:
      command: { argv: ["curl", "-s", "http://10.0.0.9/"], concurrency: 4, count: 1000 }
thresholds: { p99: "< 20ms", errors: "== 0" }
`;

/** The PLAN_INVALID message for `text`, which must be refused. */
function refusal(text: string): string {
  try {
    parsePlan(text, "plan.yaml");
  } catch (err) {
    assert.ok(isGuestlinkError(err, "PLAN_INVALID"), `PLAN_INVALID, got ${String(err)}`);
    assert.doesNotMatch(err.message, /\n/, "one line");
    return err.message;
  }
  assert.fail("the plan was accepted");
}

describe("durations and sizes", () => {
  it("reads the units plans use", () => {
    assert.deepEqual(parseDuration("250ms"), { value: 250 });
    assert.deepEqual(parseDuration("2s"), { value: 2000 });
    assert.deepEqual(parseDuration("1.5m"), { value: 90_000 });
    assert.deepEqual(parseDuration("1h"), { value: 3_600_000 });
    assert.deepEqual(parseDuration(40), { value: 40 });
    assert.deepEqual(parseSize("64KiB"), { value: 65536 });
    assert.deepEqual(parseSize("1MiB"), { value: 1 << 20 });
    assert.deepEqual(parseSize("2GiB"), { value: 2 * 1024 ** 3 });
    assert.deepEqual(parseSize("10MB"), { value: 10_000_000 });
    assert.deepEqual(parseSize(512), { value: 512 });
  });

  it("refuses what it cannot read, saying how to write it", () => {
    for (const bad of ["2 sec", "-1s", "s", "", "1e3s", null, true, -5, Number.NaN]) {
      const parsed = parseDuration(bad);
      assert.ok("error" in parsed, `${String(bad)} refused`);
      if (typeof bad === "string") assert.match(parsed.error, /ms, s, m or h/);
    }
    for (const bad of ["1MiB2", "1.5B", "3 parsecs", "-1KiB", {}, "1.5"]) {
      assert.ok("error" in parseSize(bad), `${String(bad)} refused`);
    }
  });

  it("reads back every duration it formats", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 * 3_600_000 }), (ms) => {
        const again = parseDuration(formatDuration(ms));
        assert.ok("value" in again);
        assert.ok(
          Math.abs(again.value - ms) <= Math.max(1, ms * 1e-3),
          `${ms} -> ${formatDuration(ms)}`,
        );
      }),
    );
  });
});

describe("a fleet run's plan", () => {
  it("reads the example plan with every default filled in", () => {
    const plan = parsePlan(SMOKE, "plan.yaml");
    assert.equal(plan.name, "smoke");
    assert.deepEqual(plan.agents[1], { id: "vm-2", address: "tcp:10.0.0.2:7070" });
    assert.equal(plan.startDelayMs, 2000);
    assert.deepEqual(plan.clock, { maxSkewMs: 10_000 });
    assert.deepEqual(plan.timeouts, {
      connectMs: 10_000,
      readyMs: 30_000,
      silenceMs: 10_000,
      lostMs: 30_000,
    });
    assert.deepEqual(
      plan.stages.map((s) => [s.name, s.barrier, s.timeoutMs, s.durationMs]),
      [
        ["prepare", { kind: "all" }, 300_000, undefined],
        ["main", { kind: "min", min: 2 }, undefined, 30_000],
        ["probe", { kind: "all" }, undefined, undefined],
      ],
    );
    assert.deepEqual(plan.stages[0]?.workload, {
      kind: "io",
      dir: "/tmp/bench",
      files: 64,
      size: 1 << 20,
      concurrency: 1,
      count: undefined,
      mix: { write: 1 },
    });
    assert.deepEqual(plan.stages[1]?.workload.kind === "io" && plan.stages[1].workload.mix, {
      read: 70,
      write: 30,
    });
    assert.deepEqual(plan.stages[2]?.workload, {
      kind: "command",
      argv: ["curl", "-s", "http://10.0.0.9/"],
      concurrency: 4,
      count: 1000,
    });
    assert.deepEqual(
      plan.thresholds.map((t) => [t.metric, t.comparator, t.value]),
      [
        ["p99", "<", 20_000],
        ["errors", "==", 0],
      ],
    );
  });

  it("fills in defaults for a minimal plan", () => {
    const plan = parsePlan(
      "name: m\nagents: [{id: a, address: 'unix:/a.sock'}]\nstages: [{name: s, workload: {io: {dir: /d, op: stat}}}]\n",
      "m.yaml",
    );
    assert.equal(plan.startDelayMs, 2000);
    assert.deepEqual(plan.timeouts, {
      connectMs: 10_000,
      readyMs: 30_000,
      silenceMs: 10_000,
      lostMs: 30_000,
    });
    assert.deepEqual(plan.thresholds, []);
  });

  it("reads a NATS query in place of the agent list, and refuses a malformed one", () => {
    const stages = "stages: [{name: s, barrier: {min: 40}, workload: {io: {dir: /d, op: stat}}}]\n";
    const plan = parsePlan(
      `name: q\nagents: { nats: "nats://h:4222", match: "io-*", creds: /etc/n.creds }\n${stages}`,
      "q.yaml",
    );
    assert.deepEqual(plan.agents, []);
    assert.deepEqual(plan.agentQuery, {
      nats: "nats://h:4222",
      match: "io-*",
      creds: "/etc/n.creds",
    });
    for (const [agents, why] of [
      ['{ nats: "tcp:h:1" }', /^q\.yaml: agents\.nats: NATS servers are written nats:/],
      [
        '{ nats: "nats://h/io-*", match: "x*" }',
        /agents\.match: the id pattern is in nats already/,
      ],
      ['{ nats: "nats://h", match: "a.b" }', /agents\.match: an agent-id pattern/],
      ['{ nats: "nats://h", matsh: "a" }', /agents\.matsh: unknown key/],
      ["{ match: a }", /agents\.nats: required/],
    ] as const) {
      assert.throws(
        () => parsePlan(`name: q\nagents: ${agents}\n${stages}`, "q.yaml"),
        (err: unknown) => isGuestlinkError(err, "PLAN_INVALID") && why.test(err.message),
        agents,
      );
    }
  });

  it("names the path of a wrong value, an unknown key, a missing one", () => {
    const cases: [string, string, RegExp][] = [
      [
        "size: 64KiB",
        "size: 64KB2",
        /^plan\.yaml: stages\[1\]\.workload\.io\.size: "64KB2" is not a size/,
      ],
      [
        "concurrency: 8",
        "concurency: 8",
        /^plan\.yaml: stages\[1\]\.workload\.io\.concurency: unknown key; expected one of: dir, files, size, concurrency/,
      ],
      [
        "barrier: { min: 2 }",
        "barrier: { min: 3 }",
        /stages\[1\]\.barrier\.min: expected a whole number from 1 to 2, got number 3/,
      ],
      [
        "barrier: all",
        "barrier: most",
        /stages\[0\]\.barrier: expected all, majority, best_effort or \{ min: N \}/,
      ],
      [
        "duration: 30s",
        "duration: 30 seconds",
        /stages\[1\]\.duration: "30 seconds" is not a duration/,
      ],
      ["start_delay: 2s", "start_dealy: 2s", /^plan\.yaml: start_dealy: unknown key/],
      ['address: "tcp:10.0.0.2:7070"', 'address: "tcpp:10.0.0.2"', /agents\[1\]\.address: .*tcpp/],
      ["{ id: vm-2,", "{ id: vm-1,", /agents\[1\]\.id: "vm-1" is named twice/],
      [
        "op: write }",
        "op: write, mix: { read: 1 } }",
        /stages\[0\]\.workload\.io: give either op or mix, not both/,
      ],
      [
        "op: write }",
        "op: scribble }",
        /stages\[0\]\.workload\.io\.op: expected one of write, read, stat, delete/,
      ],
      [
        'argv: ["curl", "-s", "http://10.0.0.9/"]',
        "argv: []",
        /stages\[2\]\.workload\.command\.argv: expected at least 1 item/,
      ],
      [
        'p99: "< 20ms"',
        'p99: "about 20ms"',
        /thresholds\.p99: expected a comparison like "< 20ms"/,
      ],
      [
        "      command: {",
        "      io: { dir: /x, op: read }\n      command: {",
        /stages\[2\]\.workload: expected exactly one of io, command/,
      ],
      ["name: smoke", "name: smoke/../../etc", /^plan\.yaml: name: use letters, digits/],
      ["name: probe", "name: main", /stages\[2\]\.name: "main" is used twice/],
    ];
    for (const [from, to, expected] of cases) {
      assert.ok(SMOKE.includes(from), from);
      assert.match(refusal(SMOKE.replace(from, to)), expected);
    }
    assert.match(
      refusal(SMOKE.replace("  - name: probe\n", "  - nam: probe\n")),
      /stages\[2\]\.name: required, but missing/,
    );
  });

  it("says where YAML that does not parse went wrong, by line and column", () => {
    assert.match(refusal("name: x\nagents: [\n"), /^plan\.yaml:\d+:\d+: not valid YAML: /);
    assert.match(
      refusal("name: a\nname: b\n"),
      /^plan\.yaml:2:1: not valid YAML: Map keys must be unique/,
    );
    assert.match(
      refusal("- just\n- a list\n"),
      /^plan\.yaml: expected a mapping \(key: value\), got a list/,
    );
    assert.match(refusal(""), /^plan\.yaml: expected a mapping/);
  });

  it("refuses a stage that has both a duration and a count, or a timeout within its duration", () => {
    assert.match(
      refusal(SMOKE.replace("duration: 30s", "duration: 30s\n    timeout: 10s")),
      /stages\[1\]\.timeout: must be longer than the stage's duration/,
    );
    assert.match(
      refusal(SMOKE.replace("name: probe\n", "name: probe\n    duration: 5s\n")),
      /stages\[2\]\.duration: give the stage a duration or its workload a count, not both/,
    );
  });
});
