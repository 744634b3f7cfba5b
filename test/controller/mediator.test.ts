/**
 * The mediator with real processes: `guestlink mediate` and `guestlink submit` as users run them,
 * guests on Unix sockets, a shared socket and mailbox folders found live, workers as JSON-RPC
 * helpers and as a process per request; and the library's Mediator with guests reaching it
 * through the chaos proxy (cuts and junk), every request answered exactly once.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { readMediatorConfig } from "../../src/controller/mediator/config.ts";
import { Mediator } from "../../src/controller/mediator/mediator.ts";
import { submitWork } from "../../src/controller/mediator/submit.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession } from "../../src/platform/session.ts";
import { startChaosProxy } from "../chaos/proxy.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { until } from "../helpers/until.ts";

const WORKER = fileURLToPath(new URL("../fixtures/mediator/worker.mjs", import.meta.url));
/** A command worker: the request on stdin, its result on stdout. */
const COMMAND = `let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{const i=JSON.parse(s);if(i.bad)process.stdout.write("not json");else process.stdout.write(JSON.stringify({product:i.a*i.b,guest:process.env.GUESTLINK_GUEST}))})`;

function runs(file: string): { guest: string; key: string | null }[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

describe("guestlink mediate and submit (CLI, real processes)", () => {
  let dir = "";
  let mediate: ReturnType<typeof startCli> | undefined;
  let stderr = "";
  let runsFile = "";
  const vm1 = () => `unix:${join(dir, "vm-1.sock")}`;
  const shared = () => `unix:${join(dir, "shared.sock")}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-mediate-"));
    runsFile = join(dir, "runs.ndjson");
    mkdirSync(join(dir, "vms"));
    const config = join(dir, "mediator.yaml");
    writeFileSync(
      config,
      `listen:
  - "${vm1()}"
  - "mailbox:${join(dir, "vms")}/*/mediator"
  - { address: "${shared()}", shared: true }
pools:
  - name: cpu
    slots: 2
    priorities: 2
    weights: [3, 1]
    worker: { helper: ["${process.execPath}", "${WORKER}"] }
  - name: calc
    worker: { command: ["${process.execPath}", "-e", ${JSON.stringify(COMMAND)}] }
`,
    );
    process.env.RUNS_FILE = runsFile;
    mediate = startCli(["mediate", "--config", config]);
    mediate.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    await until("the mediator to run", () =>
      stderr.includes("mediator running") ? true : undefined,
    );
  });

  after(async () => {
    if (mediate !== undefined && mediate.exitCode === null) {
      mediate.kill("SIGTERM");
      await once(mediate, "close");
    }
    delete process.env.RUNS_FILE;
    await rm(dir, { recursive: true, force: true });
  });

  it("answers a guest on its own socket, names it by its channel, and runs the command worker too", async () => {
    const r = await runCli(["submit", vm1(), "cpu", '{"a": 780, "b": 456}', "--priority", "1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { sum: 1236, guest: vm1(), priority: 1 });
    const c = await runCli(["submit", vm1(), "calc", '{"a": 6, "b": 7}', "--json"]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(JSON.parse(c.stdout), {
      schemaVersion: 1,
      pool: "calc",
      key: null,
      result: { product: 42, guest: vm1() },
    });
  });

  it("picks up a guest's mailbox folder that appears while it runs, and splits a shared socket by the id each guest gives", async () => {
    mkdirSync(join(dir, "vms", "vm-7"));
    const mailbox = `mailbox:${join(dir, "vms", "vm-7", "mediator")}`;
    await until("the new folder's channel", async () => {
      const s = await runCli(["call", vm1(), "mediator.status"]);
      const status = JSON.parse(s.stdout) as { channels: { address: string; guest: string }[] };
      return status.channels.find((c) => c.address === mailbox && c.guest === "vm-7");
    });
    const m = await runCli(["submit", mailbox, "cpu", '{"a": 1, "b": 1}']);
    assert.equal(m.code, 0, m.stderr);
    assert.equal(JSON.parse(m.stdout).guest, "vm-7");
    const s = await runCli(["submit", shared(), "cpu", '{"a": 2, "b": 2}', "--id", "alpha"]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(JSON.parse(s.stdout).guest, `${shared()}#alpha`);
  });

  it("fails with one line naming the code, exit 255: unknown pool, bad priority, bad JSON, a failing worker", async () => {
    const cases: [string[], RegExp][] = [
      [["submit", vm1(), "gpu", "{}"], /POOL_NOT_FOUND.*cpu, calc|no pool.*gpu/i],
      [["submit", vm1(), "cpu", "{}", "--priority", "3"], /priority/],
      [["submit", vm1(), "cpu", "{not json"], /must be JSON/],
      [["submit", vm1(), "cpu", '{"fail": "disk full"}'], /WORKER_FAILED|cannot: disk full/],
      [["submit", vm1(), "calc", '{"bad": true}'], /not a JSON result/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 255, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, pattern, args.join(" "));
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.equal(r.stdout, "");
    }
  });

  it("a guest killed while it waits gets the reply when it submits again with its key; the work ran once", async () => {
    const key = "job-sigkill";
    const first = startCli([
      "submit",
      vm1(),
      "cpu",
      '{"a": 5, "b": 5, "sleepMs": 1500}',
      "--key",
      key,
    ]);
    await until("the worker to start the job", () =>
      runs(runsFile).some((r) => r.key === key) ? true : undefined,
    );
    first.kill("SIGKILL");
    await once(first, "close");
    const again = await runCli([
      "submit",
      vm1(),
      "cpu",
      '{"a": 5, "b": 5, "sleepMs": 1500}',
      "--key",
      key,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).sum, 10);
    // And once more after it finished: the kept reply, still one run.
    const third = await runCli(["submit", vm1(), "cpu", '{"a": 5, "b": 5}', "--key", key]);
    assert.equal(JSON.parse(third.stdout).sum, 10);
    assert.equal(runs(runsFile).filter((r) => r.key === key).length, 1);
  });

  it("takes a guest name with a NUL to a command worker, and refuses a key with one (found by the fuzzer)", async () => {
    const session = await openSession(shared(), {
      peer: { id: "a\0b", hostname: "fuzz", version: "0" },
    });
    try {
      const reply = (await submitWork(session, "calc", { a: 2, b: 3 })) as { guest: string };
      assert.equal(reply.guest, `${shared()}#a\uFFFDb`);
      await assert.rejects(
        session.call("mediator.submit", { pool: "calc", input: { a: 1, b: 1 }, key: "k\0" }),
        (e: unknown) => isGuestlinkError(e, "INVALID_OPTION") && /NUL/.test((e as Error).message),
      );
    } finally {
      session.abort();
    }
  });

  it("reports its status as JSON, each pool with its levels and guests", async () => {
    const r = await runCli(["call", vm1(), "mediator.status", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const { result } = JSON.parse(r.stdout) as {
      result: {
        pools: { name: string; levels: { priority: number }[]; flows: { flow: string }[] }[];
      };
    };
    const cpu = result.pools.find((p) => p.name === "cpu");
    assert.deepEqual(
      cpu?.levels.map((l) => l.priority),
      [1, 2],
    );
    assert.ok(cpu?.flows.some((f) => f.flow === vm1()));
  });

  it("stops on SIGTERM with exit 0", async () => {
    assert.ok(mediate);
    mediate.kill("SIGTERM");
    const [code] = await once(mediate, "close");
    assert.equal(code, 0, stderr);
    mediate = undefined;
  });
});

describe("the mediator through the chaos proxy (library)", () => {
  it("answers every request exactly once while the guests' connections are cut and junk is injected", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guestlink-mediator-chaos-"));
    const runsFile = join(dir, "runs.ndjson");
    process.env.RUNS_FILE = runsFile;
    const guests = ["vm-a", "vm-b"];
    const config = readMediatorConfig({
      listen: guests.map((g) => ({ address: `unix:${join(dir, `${g}.sock`)}`, name: g })),
      pools: [
        { name: "cpu", slots: 3, priorities: 2, worker: { helper: [process.execPath, WORKER] } },
      ],
    });
    const mediator = await Mediator.start(config);
    const proxies = await Promise.all(
      guests.map((g, i) =>
        startChaosProxy({
          listen: { path: join(dir, `${g}-proxy.sock`) },
          target: { path: join(dir, `${g}.sock`) },
          seed: 1700 + i,
          faults: { cutEveryBytes: 6_000, garbageEveryBytes: 2_500 },
        }),
      ),
    );
    try {
      const results = await Promise.all(
        guests.map(async (g, i) => {
          const session = await openSession(proxies[i]?.address as string);
          try {
            return await Promise.all(
              Array.from({ length: 60 }, (_, n) =>
                submitWork(
                  session,
                  "cpu",
                  { a: n, b: i * 1000, sleepMs: n % 3 },
                  { key: `${g}-${n}`, priority: 1 + (n % 2) },
                ),
              ),
            );
          } finally {
            await session.close();
          }
        }),
      );
      results.forEach((answers, i) => {
        assert.deepEqual(
          answers.map((a) => (a as { sum: number }).sum),
          Array.from({ length: 60 }, (_, n) => n + i * 1000),
        );
        assert.ok(answers.every((a) => (a as { guest: string }).guest === guests[i]));
      });
      const counted = new Map<string, number>();
      for (const r of runs(runsFile))
        counted.set(r.key as string, (counted.get(r.key as string) ?? 0) + 1);
      assert.equal(counted.size, 120);
      assert.ok(
        [...counted.values()].every((n) => n === 1),
        "every key ran once",
      );
      const faults = proxies.reduce((n, p) => n + p.stats.cuts + p.stats.garbageBursts, 0);
      assert.ok(faults > 0, "the proxy did cut and inject");
    } finally {
      await Promise.all(proxies.map((p) => p.close()));
      await mediator.close();
      delete process.env.RUNS_FILE;
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a bad submit from a guest with INVALID_OPTION, and the session goes on", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guestlink-mediator-bad-"));
    const config = readMediatorConfig({
      listen: [`unix:${join(dir, "g.sock")}`],
      pools: [{ name: "cpu", worker: { helper: [process.execPath, WORKER] } }],
    });
    const mediator = await Mediator.start(config);
    try {
      const session = await openSession(`unix:${join(dir, "g.sock")}`);
      await assert.rejects(session.call("mediator.submit", { pool: 3 }), (e: unknown) =>
        isGuestlinkError(e, "INVALID_OPTION"),
      );
      await assert.rejects(
        session.call("mediator.submit", { pool: "cpu", extra: 1 }),
        (e: unknown) => isGuestlinkError(e, "INVALID_OPTION"),
      );
      assert.equal(((await submitWork(session, "cpu", { a: 1, b: 1 })) as { sum: number }).sum, 2);
      await session.close();
    } finally {
      await mediator.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a pool whose work a function of the program does", () => {
  it("runs it in process: its result is the reply, its throw WORKER_FAILED; a pool with no worker at all is refused", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guestlink-mediator-fn-"));
    const config = readMediatorConfig(
      { listen: [`unix:${join(dir, "g.sock")}`], pools: [{ name: "inline", slots: 4 }] },
      { workers: "optional" },
    );
    await assert.rejects(
      Mediator.start(config),
      (e: unknown) => isGuestlinkError(e, "CONFIG_INVALID") && /pools\[0\]\.worker/.test(e.message),
    );
    const mediator = await Mediator.start(config, {
      workers: {
        inline: (input, ctx) => {
          const { a, b } = input as { a: number; b: number };
          if (a < 0) throw new Error("negative");
          return { sum: a + b, guest: ctx.flow };
        },
      },
    });
    try {
      const session = await openSession(`unix:${join(dir, "g.sock")}`);
      assert.deepEqual(await submitWork(session, "inline", { a: 2, b: 3 }), {
        sum: 5,
        guest: `unix:${join(dir, "g.sock")}`,
      });
      await assert.rejects(
        submitWork(session, "inline", { a: -1, b: 0 }),
        (e: unknown) => isGuestlinkError(e, "WORKER_FAILED") && /negative/.test(e.message),
      );
      await session.close();
    } finally {
      await mediator.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a guest that cancels a queued request takes it out of the queue: it never runs", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guestlink-mediator-cancel-"));
    const config = readMediatorConfig(
      { listen: [`unix:${join(dir, "g.sock")}`], pools: [{ name: "one", slots: 1 }] },
      { workers: "optional" },
    );
    const ran: number[] = [];
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const mediator = await Mediator.start(config, {
      workers: {
        one: async (input) => {
          const n = (input as { n: number }).n;
          ran.push(n);
          if (n === 1) await held;
          return n;
        },
      },
    });
    try {
      const session = await openSession(`unix:${join(dir, "g.sock")}`);
      const first = submitWork(session, "one", { n: 1 });
      await until("the first request to run", () => (ran.length === 1 ? true : undefined));
      const stop = new AbortController();
      const second = submitWork(session, "one", { n: 2 }, { signal: stop.signal });
      await until("the second to be queued", () =>
        mediator.status().pools[0]?.queued === 1 ? true : undefined,
      );
      stop.abort();
      await assert.rejects(second, (e: unknown) => isGuestlinkError(e, "CANCELLED"));
      await until("the mediator to let it go", () =>
        mediator.status().pools[0]?.queued === 0 ? true : undefined,
      );
      assert.equal(mediator.status().pools[0]?.levels[0]?.cancelled, 1);
      release();
      assert.equal(await first, 1);
      assert.equal(await submitWork(session, "one", { n: 3 }), 3);
      assert.deepEqual(ran, [1, 3]);
      await session.close();
    } finally {
      release();
      await mediator.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
