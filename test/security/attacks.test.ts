/**
 * Attacks on a real agent process and a real daemon process (docs/security.md), each while a real
 * client keeps using them: 1,000 connections that never send a byte, 200 that send half a HELLO,
 * a peer opening 100,000 streams, one flooding calls without reading the answers, and one whose
 * HELLO asks for absurd limits. The target keeps serving the client, and its memory stays under
 * a bound (below). The client's round trips before and during each attack, and the target's
 * memory, are printed as figures (`# …` lines), not asserted: a shared CI machine's timings say
 * little, a hang or an error says a lot, and those are asserted.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { openDaemonSession } from "../../src/daemon/client.ts";
import { openSession } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { type AgentProcess, residentBytes, startAgent } from "../helpers/agent-process.ts";
import { startCli } from "../helpers/cli.ts";
import { freePort } from "../helpers/ports.ts";
import { until } from "../helpers/until.ts";
import {
  formatTrips,
  halfHellos,
  MiB,
  RawPeer,
  type RoundTrips,
  roundTrips,
  silentConnections,
} from "./attackers.ts";

/**
 * What a target may grow by, at its peak, over its memory before the attacks, from the
 * defaults (docs/security.md#limits): per listener 64 connections waiting for a HELLO
 * (a few KiB each); per session 4,096 open streams (~1 KiB each, 4 MiB), 1,024 calls running
 * with their params (16 KiB each here: 16 MiB, and their answers as much), 4 MiB queued toward
 * a peer that does not read, a 16 MiB replay buffer, a 1 MiB partial frame; about 60 MiB held at
 * once by one hostile session, doubled for garbage not yet collected and pages the allocator
 * keeps, and rounded up: 150 MiB. Unbounded, the flood's answers alone are 312 MiB and the
 * streams of 100,000 calls several hundred.
 */
const GROWTH_BOUND = 150 * MiB;
const SILENT = 1_000;
const HALF_HELLOS = 200;
const STREAMS = 100_000;
const STREAMS_PER_CALL = 4;
const FLOOD_CALLS = 20_000;
const FLOOD_PARAM_BYTES = 16 * 1024;
/** Round trips measured each time. */
const TRIPS = 200;

interface Target {
  name: string;
  pid: () => number;
  /** Where the attackers connect. */
  address: () => string;
  /** The real client, through the target. */
  client: () => Session;
  /** Call ids of a peer that dials this address: odd (a host dialling an agent) or even. */
  idParity: 1 | 2;
  /** Memory before the first attack (after warming up). */
  baseline: number;
  before: RoundTrips | undefined;
  /** Memory when the attack under way began. */
  atStart: number;
  /** A new peer of the kind the address is for connects and is served. */
  fresh: () => Promise<void>;
}

/** Resets the peak of `pid`'s resident memory (VmHWM) to what it holds now (Linux). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

function report(t: TestContext, target: Target, attack: string, during: RoundTrips, extra = "") {
  const rss = residentBytes(target.pid());
  const peak = residentBytes(target.pid(), "VmHWM");
  const growth = peak - target.atStart;
  t.diagnostic(
    `${target.name} · ${attack}: client round trip before ${formatTrips(target.before as RoundTrips)}; during ${formatTrips(during)}`,
  );
  t.diagnostic(
    `${target.name} · ${attack}: memory ${(target.atStart / MiB).toFixed(0)} MiB before it, peak ${(peak / MiB).toFixed(0)} MiB during it (+${(growth / MiB).toFixed(0)} MiB, bound +${GROWTH_BOUND / MiB} MiB), ${(rss / MiB).toFixed(0)} MiB after (${(target.baseline / MiB).toFixed(0)} MiB before the first attack)${extra ? `; ${extra}` : ""}`,
  );
  assert.equal(during.failed, 0, `${target.name}: the client's calls failed during ${attack}`);
  assert.ok(
    growth <= GROWTH_BOUND,
    `${target.name} grew ${(growth / MiB).toFixed(0)} MiB during ${attack}, past its bound`,
  );
}

/** The client's round trips while `attack` runs (started first, so the attack is under way). */
async function during(target: Target, attack: () => Promise<void>): Promise<RoundTrips> {
  target.atStart = residentBytes(target.pid());
  resetPeak(target.pid());
  const running = attack();
  const trips = await roundTrips(target.client(), TRIPS);
  await running;
  return trips;
}

/** The attacks, run in turn on `target`. */
function attacks(target: Target) {
  it(`${SILENT} connections that never send a byte`, async (t) => {
    let crowd: Awaited<ReturnType<typeof silentConnections>> | undefined;
    try {
      const trips = await during(target, async () => {
        crowd = await silentConnections(target.address(), SILENT);
      });
      const c = crowd as NonNullable<typeof crowd>;
      // The target drops the oldest of those still silent as new ones come: at most its bound
      // (64) stays, once it has taken them all from its accept queue.
      await until("the target's pending bound reached", () => (c.open <= 70 ? true : undefined));
      // A new client still gets in (it says HELLO at once; the oldest silent one makes room).
      await target.fresh();
      report(
        t,
        target,
        "silent connections",
        trips,
        `${c.sockets.length} connected, ${c.open} still open (the rest dropped by the target)`,
      );
    } finally {
      crowd?.destroy();
    }
  });

  it(`${HALF_HELLOS} connections that send half a HELLO, dropped once their time to HELLO is up`, async (t) => {
    let crowd: Awaited<ReturnType<typeof halfHellos>> | undefined;
    try {
      const trips = await during(target, async () => {
        crowd = await halfHellos(target.address(), HALF_HELLOS);
      });
      const c = crowd as NonNullable<typeof crowd>;
      report(t, target, "half HELLOs", trips, `${c.open} of ${c.sockets.length} still open`);
      await until(
        "every half-HELLO connection dropped (10 s to HELLO)",
        () => (c.open === 0 ? true : undefined),
        20_000,
      );
    } finally {
      crowd?.destroy();
    }
  });

  it(`a peer opening ${STREAMS.toLocaleString("en")} streams it never ends`, async (t) => {
    const peer = await RawPeer.connect(target.address());
    try {
      const calls = STREAMS / STREAMS_PER_CALL;
      const trips = await during(target, async () => {
        let id = target.idParity;
        for (let i = 0; i < calls; i++) {
          const callId = id;
          id += 2;
          const streams: Record<string, number> = {};
          for (let s = 0; s < STREAMS_PER_CALL; s++) {
            streams[`s${s}`] = id;
            id += 2;
          }
          await peer.send(FrameType.CALL, callId, { method: "ping", params: i, streams });
        }
        await until(
          "every call answered",
          () => (peer.results + sum(peer.errors) >= calls || peer.closed ? true : undefined),
          60_000,
        );
      });
      const answered = `${peer.results} calls answered, ${[...peer.errors].map(([c, n]) => `${n} ${c}`).join(", ") || "no errors"}${peer.sessionError ? `, session ended ${peer.sessionError}` : ""}`;
      report(t, target, "100,000 streams", trips, answered);
      assert.equal(peer.results + sum(peer.errors), calls, answered);
    } finally {
      peer.destroy();
    }
  });

  it("a peer flooding calls without reading the answers", async (t) => {
    const peer = await RawPeer.connect(target.address(), { read: false });
    try {
      let sent = 0;
      let stalled = false;
      const trips = await during(target, async () => {
        const params = new Uint8Array(FLOOD_PARAM_BYTES).fill(7);
        let id = target.idParity;
        while (sent < FLOOD_CALLS && !peer.closed) {
          const written = peer.send(FrameType.CALL, id, { method: "ping", params });
          id += 2;
          sent++;
          // The target stops reading once it holds its bound: our writes stop draining.
          const drained = await Promise.race([
            written.then(() => true),
            new Promise<false>((r) => setTimeout(() => r(false), 2_000)),
          ]);
          if (!drained) {
            stalled = true;
            break;
          }
        }
      });
      report(
        t,
        target,
        "call flood",
        trips,
        `${sent} calls of ${FLOOD_PARAM_BYTES / 1024} KiB written, ${stalled ? "then the target stopped reading" : "all taken"}`,
      );
    } finally {
      peer.destroy();
    }
  });

  it("a peer whose HELLO asks for absurd limits, then asks for output it never reads", async (t) => {
    const peer = await RawPeer.connect(target.address(), {
      read: false,
      limits: {
        maxFrameBytes: 64 * MiB,
        streamWindowBytes: 2 ** 31 - 1,
        sessionWindowBytes: 2 ** 31 - 1,
      },
    });
    try {
      const trips = await during(target, async () => {
        // Eight commands that write without end, their windows open to 2 GiB: only the
        // target's own bounds hold what it sends to a peer that does not read.
        let id = target.idParity;
        for (let i = 0; i < 8; i++) {
          const callId = id;
          const stdout = id + 2;
          id += 4;
          await peer.send(FrameType.CALL, callId, {
            method: "exec",
            params: { argv: ["sh", "-c", "exec cat /dev/zero"] },
            streams: { stdout },
          });
        }
        await new Promise((r) => setTimeout(r, 3_000));
      });
      report(t, target, "absurd limits", trips);
    } finally {
      peer.destroy();
    }
  });

  it("still serves the client afterwards", async (t) => {
    const trips = await roundTrips(target.client(), TRIPS);
    report(t, target, "after the attacks", trips);
  });
}

function sum(m: Map<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

async function warm(target: Target): Promise<void> {
  await roundTrips(target.client(), 100);
  target.before = await roundTrips(target.client(), TRIPS);
  target.baseline = residentBytes(target.pid());
}

describe("attacks on an agent", { timeout: 600_000 }, () => {
  let dir = "";
  let agent: AgentProcess;
  let address = "";
  let client: Session;
  const target: Target = {
    name: "agent",
    pid: () => agent.pid,
    address: () => address,
    client: () => client,
    idParity: 1,
    baseline: 0,
    before: undefined,
    atStart: 0,
    fresh: async () => {
      const host = await openSession(address);
      await host.call("ping");
      host.abort();
    },
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-attacks-"));
    agent = await startAgent(join(dir, "agent.sock"), { args: ["--listen", "tcp:127.0.0.1:0"] });
    const m = /"addresses":\[[^\]]*"(tcp:[^"]+)"/.exec(agent.log());
    assert.ok(m, agent.log());
    address = m[1] as string;
    client = await openSession(address);
    await warm(target);
  });

  after(async () => {
    client?.abort();
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  attacks(target);
});

describe("attacks on the daemon, at the address where agents dial in", { timeout: 600_000 }, () => {
  let dir = "";
  let good: AgentProcess;
  let serve: ReturnType<typeof startCli>;
  let serveErr = "";
  let address = "";
  let client: Session;
  const target: Target = {
    name: "daemon",
    pid: () => serve.pid as number,
    address: () => address,
    client: () => client,
    // The daemon is the client of the agents that dial in: they call with even ids.
    idParity: 2,
    baseline: 0,
    before: undefined,
    atStart: 0,
    // An agent dialling in: its handshake is answered, and the daemon takes it.
    fresh: async () => {
      const agent = await openSession(address, {
        role: "server",
        peer: { id: "fresh-agent", hostname: "fresh", version: "0" },
        resume: false,
      });
      agent.abort();
    },
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-attacks-daemon-"));
    good = await startAgent(join(dir, "good.sock"), { args: ["--id", "good"] });
    address = `tcp:127.0.0.1:${await freePort()}`;
    const socket = join(dir, "serve.sock");
    writeFileSync(
      join(dir, "serve.yaml"),
      `agents: [{ id: good, address: "${good.address}" }]\nlisten: ["${address}"]\nsocket: ${socket}\nhttp: off\n`,
    );
    serve = startCli(["serve", "--config", join(dir, "serve.yaml")]);
    serve.stderr.setEncoding("utf8").on("data", (d: string) => {
      serveErr = (serveErr + d).slice(-64 * 1024);
    });
    await until("the daemon", () => (serveErr.includes("daemon running") ? true : undefined));
    // The real client: a session to the good agent through the daemon's tunnel (`@good`).
    await until("the good agent held", async () => {
      try {
        client = await openDaemonSession("good", { socketPath: socket });
        return true;
      } catch {
        return undefined;
      }
    });
    await warm(target);
  });

  after(async () => {
    client?.abort();
    if (serve !== undefined && serve.exitCode === null) {
      serve.kill("SIGKILL");
      await once(serve, "close");
    }
    await good?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  attacks(target);
});
