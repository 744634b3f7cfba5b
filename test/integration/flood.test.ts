/**
 * A real agent process, flooded through its Unix socket by a client that completed the handshake
 * and then never reads (test/fixtures/flood-client.ts): every `ping` it sends is answered with
 * its 16 KiB param, to a peer that takes none of the answers. The agent must hold a bounded
 * amount for it (by no longer reading it once its bounds are reached, or otherwise), while
 * another host on its own session is still answered.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openSession } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { HostileClient } from "../fixtures/flood-client.ts";
import { residentBytes, startAgent } from "../helpers/agent-process.ts";

const MiB = 1024 * 1024;
const CALLS = 20_000;
const PARAM_BYTES = 16 * 1024;

/**
 * What the agent may grow by while it holds the flood, from the session's defaults:
 *   calls running at once, 1024 × 16 KiB params, and their 16 KiB answers      32 MiB
 *   bytes queued toward a peer that does not read (maxQueuedBytes)               4 MiB
 *   the replay buffer, which this peer never lets go of (it sends no ACK)       16 MiB
 *   received bytes waiting to be decoded (256 KiB) and a partial frame (1 MiB)   ~1 MiB
 * about 53 MiB held, doubled for garbage the heap has not collected yet and pages the allocator
 * keeps: ~110 MiB, and 150 MiB with room for noise. Unbounded, the 20,000 answers alone are
 * 312 MiB.
 */
const GROWTH_BOUND_BYTES = 150 * MiB;

/** Answers in a row the other host must get while our socket stays full, to call it stuck. */
const ROUNDS_WHILE_STUCK = 20;

/**
 * The agent has stopped reading the flood: the other host got ROUNDS_WHILE_STUCK answers in a
 * row while not one call of ours left our socket buffer. The agent's event loop turned at least
 * that many times, and a socket it reads from would have been read on one of them. A call that
 * leaves starts the count again; one the other host does not get answered fails the flood.
 */
function answeredWhileStuck(socket: net.Socket, other: Session, answered: { count: number }) {
  return async (signal: AbortSignal): Promise<void> => {
    let queued = socket.writableLength;
    for (let inARow = 0; inARow < ROUNDS_WHILE_STUCK; ) {
      const seq = answered.count;
      assert.deepEqual(await other.call("ping", { seq }), { seq });
      answered.count++;
      if (signal.aborted) return;
      const now = socket.writableLength;
      inARow = now < queued ? 0 : inARow + 1;
      queued = now;
    }
  };
}

describe("an agent flooded by a client that never reads", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-flood-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("holds a bounded amount for that client, and goes on answering another host", {
    timeout: 120_000,
  }, async () => {
    const path = join(dir, "agent.sock");
    const agent = await startAgent(path);
    let hostile: HostileClient | undefined;
    let other: Session | undefined;
    try {
      other = await openSession(agent.address);
      // Warm, so the baseline holds what serving a host costs and the growth is the flood's.
      for (let i = 0; i < 20; i++) await other.call("ping", { warmup: i });
      const baseline = residentBytes(agent.pid);

      hostile = await HostileClient.connect(path);
      const answered = { count: 0 };
      const probes: Promise<void>[] = [];
      const session = other;
      const socket = hostile.socket;
      const flood = await hostile.flood({
        calls: CALLS,
        paramBytes: PARAM_BYTES,
        stalled: (signal) => {
          const probe = answeredWhileStuck(socket, session, answered)(signal);
          probes.push(probe);
          return probe;
        },
      });
      // Probes the flood outran finish their ping; each one asserts it was answered.
      await Promise.all(probes);
      // Still answered, with the flood's connection open and its answers unread.
      for (let i = 0; i < 5; i++) assert.deepEqual(await other.call("ping", { i }), { i });

      // The peak, not the present: memory the agent held for a while and gave back counts too.
      const growth = residentBytes(agent.pid, "VmHWM") - baseline;
      const figures = `baseline ${(baseline / MiB).toFixed(0)} MiB, growth ${(growth / MiB).toFixed(0)} MiB (bound ${GROWTH_BOUND_BYTES / MiB} MiB); flood ${flood.outcome} after ${flood.written} of ${CALLS} calls${flood.error ? ` (${flood.error.message})` : ""}; the other host got ${answered.count} answers during the flood`;
      assert.ok(growth <= GROWTH_BOUND_BYTES, `the agent grew past its bound: ${figures}`);
    } finally {
      hostile?.destroy();
      other?.abort();
      await agent.kill();
    }
  });
});
