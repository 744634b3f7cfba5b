/**
 * Garbage inside frames, with the options a user would leave alone. An independent check ran
 * `guestlink exec unix:… -- seq 1 20000000` through cuts and garbage with default options on both
 * sides: exit 0, the right length, and about 200 regions of junk in place of numbers. Payload
 * checksums were off on unix:, so a burst that landed inside a DATA payload was taken for output;
 * the resilience suite had turned them on and never saw it. These cases set no option at all, make
 * sure dozens of bursts land inside DATA payloads in the direction under test, and compare hashes.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SEED } from "../helpers/seed.ts";
import { chaosAgentFixture } from "./fixture.ts";
import type { ChaosFaultOptions } from "./proxy.ts";
import { execThroughProxy, seededData, stdinThroughProxy } from "./scenarios.ts";

const MiB = 1024 * 1024;

/**
 * The reported run's cuts, with garbage four times as dense as its ~1 MB, so a run of a few
 * seconds still puts dozens of bursts inside frames. The proxy applies both to both directions.
 */
const FAULTS: ChaosFaultOptions = { cutEveryBytes: 2 * MiB, garbageEveryBytes: 256 * 1024 };

/** Fewer bursts inside DATA payloads than this and a pass would prove little. */
const MIN_BURSTS_IN_DATA = 20;

describe("chaos: garbage inside frames, with default options", () => {
  const chaos = chaosAgentFixture("guestlink-corruption-");

  it("exec -- seq 1 2000000 prints exactly what seq prints, though garbage lands inside its output frames", async (t) => {
    const seed = SEED + 10;
    const replay = `seed ${seed} (replay with GUESTLINK_SEED=${SEED})`;
    const f = await execThroughProxy(chaos.address, chaos.proxyAt(), 2_000_000, seed, FAULTS);
    t.diagnostic(
      `${replay}: ${f.bytes} bytes, exit ${f.exitCode}, ${f.cuts} cuts, ${f.garbageBursts} bursts; ${f.burstPlaces}`,
    );
    assert.equal(f.exitCode, 0, `${replay}: ${f.stderr}`);
    assert.equal(f.sha256, f.expectedSha256, `${replay}: the output differs from a local seq`);
    assert.ok(
      f.burstsInData.toCli >= MIN_BURSTS_IN_DATA,
      `${replay}: only ${f.burstsInData.toCli} bursts inside DATA payloads to the CLI; ${f.burstPlaces}`,
    );
  });

  it("exec -- sha256sum reads exactly the stdin it was sent, though garbage lands inside its input frames", async (t) => {
    const seed = SEED + 11;
    const replay = `seed ${seed} (replay with GUESTLINK_SEED=${SEED})`;
    const data = seededData(seed, 12 * MiB);
    const f = await stdinThroughProxy(chaos.address, chaos.proxyAt(), data, seed, FAULTS);
    t.diagnostic(
      `${replay}: exit ${f.exitCode}, ${f.cuts} cuts, ${f.garbageBursts} bursts; ${f.burstPlaces}`,
    );
    assert.equal(f.exitCode, 0, `${replay}: ${f.stderr}`);
    assert.equal(
      f.sha256,
      f.expectedSha256,
      `${replay}: the agent hashed other bytes than were sent`,
    );
    assert.ok(
      f.burstsInData.toAgent >= MIN_BURSTS_IN_DATA,
      `${replay}: only ${f.burstsInData.toAgent} bursts inside DATA payloads to the agent; ${f.burstPlaces}`,
    );
  });

  it("junk alone never costs a connection: every damaged frame is sent again on the live one", async (t) => {
    const seed = SEED + 12;
    const replay = `seed ${seed} (replay with GUESTLINK_SEED=${SEED})`;
    const f = await execThroughProxy(
      chaos.address,
      chaos.proxyAt(),
      2_000_000,
      seed,
      { garbageEveryBytes: 256 * 1024 },
      undefined,
      true,
    );
    t.diagnostic(`${replay}: exit ${f.exitCode}, ${f.garbageBursts} bursts; ${f.burstPlaces}`);
    assert.equal(f.exitCode, 0, `${replay}: ${f.stderr}`);
    assert.equal(f.sha256, f.expectedSha256, `${replay}: the output differs from a local seq`);
    assert.ok(
      f.burstsInData.toCli >= MIN_BURSTS_IN_DATA,
      `${replay}: only ${f.burstsInData.toCli} bursts inside DATA payloads to the CLI`,
    );
    const lost = f.stderr.match(/connection lost/g)?.length ?? 0;
    assert.equal(lost, 0, `${replay}: junk cost ${lost} connections: ${f.stderr}`);
  });
});
