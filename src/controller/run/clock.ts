/**
 * Where each agent's clock stands against ours, from timed exchanges (NTP's way, simplified):
 * we note our monotonic and wall clocks, ask the agent for its wall clock, and note the round
 * trip. The exchange with the smallest round trip wins; the agent read its clock somewhere inside
 * that round trip, so half of it is the uncertainty. A start instant is then sent to each agent
 * in its own clock, and the instant it reports back is turned into ours.
 */

/** One exchange: our wall clock when we asked, the round trip, and the agent's wall clock. */
export interface ClockSample {
  sentWallMs: number;
  rttMs: number;
  remoteWallMs: number;
}

/** The agent's wall clock minus ours, and how far off that can be (half the round trip). */
export interface ClockOffset {
  offsetMs: number;
  uncertaintyMs: number;
  rttMs: number;
  samples: number;
}

/** Estimates an agent's clock offset from `samples` (at least one). */
export function estimateOffset(samples: readonly ClockSample[]): ClockOffset {
  let best: ClockSample | undefined;
  for (const sample of samples) {
    if (best === undefined || sample.rttMs < best.rttMs) best = sample;
  }
  if (best === undefined) throw new RangeError("estimateOffset needs at least one sample");
  const half = best.rttMs / 2;
  return {
    offsetMs: best.remoteWallMs - (best.sentWallMs + half),
    uncertaintyMs: half,
    rttMs: best.rttMs,
    samples: samples.length,
  };
}

/** Our wall-clock instant `ourMs`, in the agent's clock. */
export function toAgentClock(ourMs: number, offset: ClockOffset): number {
  return ourMs + offset.offsetMs;
}

/** The agent's wall-clock instant `agentMs`, in our clock. */
export function fromAgentClock(agentMs: number, offset: ClockOffset): number {
  return agentMs - offset.offsetMs;
}

/**
 * Takes `count` samples with `exchange` (one timed request to the agent), one after another, and
 * estimates the offset. `clock` is ours: monotonic `now` for the round trip, `wallNow` to anchor.
 */
export async function measureOffset(
  exchange: () => Promise<number>,
  clock: { now(): number; wallNow(): number },
  count: number,
): Promise<ClockOffset> {
  const samples: ClockSample[] = [];
  for (let i = 0; i < count; i++) {
    const sentWallMs = clock.wallNow();
    const start = clock.now();
    const remoteWallMs = await exchange();
    samples.push({ sentWallMs, rttMs: clock.now() - start, remoteWallMs });
  }
  return estimateOffset(samples);
}
