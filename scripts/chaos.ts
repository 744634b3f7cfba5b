/**
 * The long chaos run: `npm run chaos -- --minutes N [--seed S]`. Repeats the resilience scenarios
 * of test/chaos/ with the full sizes (`exec -- seq 1 20000000` through a cut every ~2 MB
 * and garbage every ~1 MB, 10,000 pipelined calls through random faults) until the time is up,
 * each round with the next seed, and reports the figures: exec throughput with faults against the
 * same command without in the same run, the median time from a new connection to resumed data,
 * and the peak memory of the agent and the CLI. Exits 1 on the first failure, naming its seed.
 *
 * The exec rounds run against the agent users run (`guestlink agent`, the build); the calls need
 * the suite's agent (test/fixtures/chaos-agent.ts, from source), which has the methods they count.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AgentProcess,
  callsThroughProxy,
  type ExecFigures,
  execThroughProxy,
  median,
  RssSampler,
} from "../test/chaos/scenarios.ts";
import { startAgent } from "../test/helpers/agent-process.ts";

const MiB = 1024 * 1024;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`chaos: ${name} takes a positive number, got "${process.argv[i + 1]}"`);
    process.exit(2);
  }
  return n;
}

const minutes = arg("--minutes", 5);
let seed = arg("--seed", Math.floor(Math.random() * 2 ** 31));
const seqN = arg("--seq", 20_000_000);
const calls = arg("--calls", 10_000);

const dir = await mkdtemp(join(tmpdir(), "guestlink-chaos-"));
const agent = await startAgent(join(dir, "agent.sock"));
const callsAddress = `unix:${join(dir, "calls-agent.sock")}`;
const callsAgent = new AgentProcess(callsAddress);
await callsAgent.ready;
const sampler = new RssSampler();
sampler.watch("agent", agent.pid);
let proxies = 0;
const proxyAt = () => ({ path: join(dir, `p${++proxies}.sock`) });

function fail(what: string, s: number, detail: string): never {
  console.error(`chaos: FAILED ${what} with seed ${s}: ${detail}`);
  console.error(`replay: npm run chaos -- --minutes 1 --seed ${s}`);
  process.exit(1);
}

function checkExec(what: string, f: ExecFigures): void {
  if (f.exitCode !== 0) fail(what, f.seed, `exit ${f.exitCode}: ${f.stderr}`);
  if (f.sha256 !== f.expectedSha256) fail(what, f.seed, "output differs from a local run");
}

const clean: number[] = [];
const faulty: number[] = [];
const handshakes: number[] = [];
let rounds = 0;
let totalCuts = 0;
let totalBursts = 0;
// A first exec, not counted: the first round would otherwise pay for a cold agent and CLI.
checkExec("warm-up exec", await execThroughProxy(agent.address, proxyAt(), 1_000_000, seed, {}));
const until = Date.now() + minutes * 60_000;
console.log(`chaos: ${minutes} min from seed ${seed}; seq 1 ${seqN}, ${calls} calls per round`);
try {
  while (Date.now() < until) {
    const base = await execThroughProxy(agent.address, proxyAt(), seqN, seed, {}, sampler);
    checkExec("exec without faults", base);
    const f = await execThroughProxy(
      agent.address,
      proxyAt(),
      seqN,
      seed,
      { cutEveryBytes: 2 * MiB, garbageEveryBytes: 1 * MiB },
      sampler,
    );
    checkExec("exec through cuts and garbage", f);
    clean.push(base.mbPerS);
    faulty.push(f.mbPerS);
    totalCuts += f.cuts;
    totalBursts += f.garbageBursts;
    const c = await callsThroughProxy(callsAddress, proxyAt(), calls, seed + 1, {
      cutEveryBytes: 64 * 1024,
      // Denser than cuts: each connection is counted afresh, so sparser garbage rarely came due.
      garbageEveryBytes: 24 * 1024,
      splitWrites: 700,
      delayMs: 1,
    });
    if (c.failed.length > 0) fail("pipelined calls", c.seed, c.failed[0] as string);
    if (c.wrong > 0) fail("pipelined calls", c.seed, `${c.wrong} wrong answers`);
    const ranOnce = c.executions.every(([runs]) => runs === 1);
    if (!ranOnce) fail("pipelined calls", c.seed, `executions ${JSON.stringify(c.executions)}`);
    handshakes.push(...c.handshakeMs);
    totalCuts += c.cuts;
    rounds++;
    console.log(
      `round ${rounds} seed ${seed}: exec ${base.mbPerS.toFixed(1)} MB/s clean, ${f.mbPerS.toFixed(1)} MB/s with ${f.cuts} cuts + ${f.garbageBursts} bursts (${f.burstsInData.toCli} inside DATA frames); ${calls} calls ok through ${c.cuts} cuts (${c.resumes} resumes) and ${c.burstsInPayloads.toAgent + c.burstsInPayloads.toCli} bursts inside payloads`,
    );
    seed += 2;
  }
} finally {
  sampler.stop();
  await agent.kill();
  await callsAgent.stop();
  await rm(dir, { recursive: true, force: true });
}
const cliPeak = Math.max(
  0,
  ...[...sampler.peakKiB.entries()].filter(([k]) => k.startsWith("cli")).map(([, v]) => v),
);
const cleanMedian = median(clean);
const faultyMedian = median(faulty);
console.log(`
chaos: ${rounds} rounds passed (${totalCuts} cuts, ${totalBursts} garbage bursts)
  exec seq 1 ${seqN}, median         ${cleanMedian.toFixed(1)} MB/s clean, ${faultyMedian.toFixed(1)} MB/s with faults (${(faultyMedian / cleanMedian).toFixed(2)}x; by round ${faulty.map((f, i) => (f / (clean[i] as number)).toFixed(2)).join(" ")})
  new connection -> data flowing     median ${median(handshakes).toFixed(1)} ms over ${handshakes.length} resumes
  peak RSS                           exec's agent ${((sampler.peakKiB.get("agent") ?? 0) / 1024).toFixed(1)} MiB, CLI ${(cliPeak / 1024).toFixed(1)} MiB`);
