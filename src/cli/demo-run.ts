/**
 * `guestlink demo` (`npm run demo`): the whole story on this machine, with nothing to set up.
 * Three agents start as child processes on temporary Unix sockets, standing in for three VMs;
 * then their info, 1 GiB of command output checked by sha256 end to end (with the throughput and
 * both sides' peak memory), more output through a relay that inserts junk into the bytes (frames
 * dropped and asked for again, output still exact), a file round trip, a few seconds of live telemetry, the channel
 * surviving garbage, and a summary. Cleans up after itself; exits non-zero if any check fails.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { AgentInfo } from "../agent/info.ts";
import { remoteExec } from "../controller/exec.ts";
import { getFile, putFile } from "../controller/files.ts";
import { formatStatus } from "../controller/mediator/table.ts";
import { formatUs } from "../controller/run/live.ts";
import { watchTelemetry } from "../controller/telemetry.ts";
import type { Session } from "../session/session.ts";
import { connectAgent, formatBytes } from "./common.ts";
import { runDaemonDemo } from "./demo-daemon.ts";
import { runFleetDemo } from "./demo-fleet.ts";
import { runHelperDemo } from "./demo-helpers.ts";
import { startJunkRelay } from "./demo-junk.ts";
import { runMediatorDemo } from "./demo-mediator.ts";
import { runNatsDemo } from "./demo-nats.ts";
import { runWireDemo } from "./demo-wire.ts";

const AGENTS = ["vm-1", "vm-2", "vm-3"] as const;

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoOptions {
  json?: boolean;
  keep?: boolean;
  outputBytes: number;
  damagedBytes: number;
  fileBytes: number;
  telemetrySeconds: number;
  fleetSeconds: number;
}

/** Peak resident memory of a local process (VmHWM), in bytes. */
/**
 * The package's bin/guestlink, which the demo's agents run as: found upward from this module,
 * which is src/cli/ or dist/cli/ (tsx, tsc) or dist/bundle/ (the CLI bundle).
 */
function guestlinkBin(): string {
  for (let url = new URL("./", import.meta.url); ; url = new URL("../", url)) {
    const bin = fileURLToPath(new URL("bin/guestlink", url));
    if (existsSync(bin)) return bin;
    if (url.pathname === "/") throw new Error("bin/guestlink not found above this module");
  }
}

async function peakRss(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kib = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

function hashingSink(): { sink: Writable; digest(): string; bytes(): number } {
  const hash = createHash("sha256");
  let bytes = 0;
  const sink = new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.length;
      callback();
    },
  });
  return { sink, digest: () => hash.digest("hex"), bytes: () => bytes };
}

function textSink(): { sink: Writable; text(): string } {
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      text += chunk.toString("utf8");
      callback();
    },
  });
  return { sink, text: () => text };
}

/**
 * Runs random bytes of `n` bytes as command output in the agent, hashed there as they are written
 * (tee into a fifo read by a sha256 tool, which reports on stderr) and hashed again here as they
 * arrive: an AES-CTR keystream from openssl where there is one, else /dev/urandom.
 */
async function checkedOutput(session: Session, n: number) {
  const script = [
    'f=$(mktemp -u); mkfifo "$f"',
    "if command -v openssl >/dev/null 2>&1; then",
    `  openssl dgst -sha256 -r < "$f" >&2 & openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:$$ < /dev/zero 2>/dev/null | head -c ${n} | tee "$f"`,
    `else sha256sum < "$f" >&2 & head -c ${n} /dev/urandom | tee "$f"; fi`,
    'wait; rm -f "$f"',
  ].join("\n");
  const out = hashingSink();
  const err = textSink();
  const started = performance.now();
  const result = await remoteExec(
    session,
    { argv: ["sh", "-c", script] },
    // Both sinks keep nothing once a write is done: the session may read into its buffers again.
    { stdout: out.sink, stderr: err.sink, recycle: true },
  );
  const seconds = (performance.now() - started) / 1000;
  const theirs = /^([0-9a-f]{64})/.exec(err.text())?.[1];
  const ours = out.digest();
  return {
    bytes: out.bytes(),
    seconds,
    status: result.status,
    ours,
    theirs,
    ok: result.status === 0 && out.bytes() === n && theirs === ours,
  };
}

export async function runDemo(opts: DemoOptions, say: (line: string) => void): Promise<Check[]> {
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string) => {
    checks.push({ name, ok, detail });
    say(`      ${ok ? "ok  " : "FAIL"} ${detail}`);
  };
  const dir = await mkdtemp(join(tmpdir(), "guestlink-demo-"));
  const bin = guestlinkBin();
  const children: ChildProcess[] = [];
  const sessions: Session[] = [];
  try {
    say(`[1/11] three agents on Unix sockets in ${dir}, standing in for three VMs`);
    for (const name of AGENTS) {
      const child = spawn(
        process.execPath,
        [
          bin,
          "agent",
          "--listen",
          `unix:${join(dir, `${name}.sock`)}`,
          "--id",
          name,
          // The demo closes its sessions before it stops the agents; what may be left is the
          // junk relay's session waiting to be resumed, which need not hold them for a drain.
          "--drain-timeout",
          "1",
          "--log-level",
          "error",
        ],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.push(child);
    }
    for (const name of AGENTS)
      sessions.push(
        await connectAgent(`unix:${join(dir, `${name}.sock`)}`, { connectTimeout: 15 }),
      );
    const infos: AgentInfo[] = [];
    for (const [i, session] of sessions.entries()) {
      const info = (await session.call("info")) as AgentInfo;
      infos.push(info);
      say(
        `      ${AGENTS[i]}  pid ${info.agent.pid}  ${info.os.type} ${info.kernel} ${info.os.arch}, ${info.cpus.count} cpus, ${formatBytes(info.memory.totalBytes)}  services: ${info.services.join(", ")}  rtt ${session.rttMs?.toFixed(2) ?? "?"} ms`,
      );
    }
    check("agents", infos.length === 3, "three agents answered with their info");

    const [vm1, vm2, vm3] = sessions as [Session, Session, Session];
    const [info1, info2] = infos as [AgentInfo, AgentInfo];

    say(
      `[2/11] ${formatBytes(opts.outputBytes)} of command output from vm-1, checked by sha256 end to end`,
    );
    say("      exec vm-1 -- sh -c '<random bytes | tee (sha256 to stderr)>'");
    const output = await checkedOutput(vm1, opts.outputBytes);
    const { seconds, ours, theirs } = output;
    const agentPeak = await peakRss(info1.agent.pid);
    const hostPeak = process.resourceUsage().maxRSS * 1024;
    say(
      `      ${formatBytes(output.bytes)} in ${seconds.toFixed(2)} s = ${(output.bytes / seconds / 1e6).toFixed(0)} MB/s, exit status ${output.status}`,
    );
    check(
      "output",
      output.ok,
      `sha256 of what arrived ${ours.slice(0, 16)}… = sha256 computed in vm-1 ${theirs?.slice(0, 16) ?? "(none)"}…`,
    );
    check(
      "memory",
      agentPeak !== undefined && agentPeak < 200 * 1024 ** 2 && hostPeak < 200 * 1024 ** 2,
      `peak memory while streaming: host ${formatBytes(hostPeak)}, vm-1's agent ${agentPeak === undefined ? "?" : formatBytes(agentPeak)} (the output was ${formatBytes(opts.outputBytes)})`,
    );

    // About every MiB, or often enough that a small --damaged-bytes still meets junk.
    const junkEvery = Math.min(1024 * 1024, Math.max(4096, Math.floor(opts.damagedBytes / 8)));
    say(
      `[3/11] ${formatBytes(opts.damagedBytes)} more from vm-1 through a relay that inserts junk into the bytes, both ways, about every ${formatBytes(junkEvery)}`,
    );
    const relay = await startJunkRelay(
      join(dir, "relay.sock"),
      join(dir, "vm-1.sock"),
      Date.now() % 2 ** 31,
      junkEvery,
    );
    try {
      const damaged = await connectAgent(relay.address, { connectTimeout: 15 });
      sessions.push(damaged);
      let reconnects = 0;
      damaged.onEvent((e) => {
        if (e.type === "disconnected") reconnects++;
      });
      const through = await checkedOutput(damaged, opts.damagedBytes);
      await damaged.close();
      const wireStats = damaged.wireStats;
      say(
        `      ${formatBytes(through.bytes)} in ${through.seconds.toFixed(2)} s = ${(through.bytes / through.seconds / 1e6).toFixed(0)} MB/s; ${relay.bursts} bursts (${formatBytes(relay.junkBytes)} of junk); this side dropped ${wireStats.badPayloads} damaged frames and ${wireStats.badHeaders} broken headers and asked for them again ${damaged.stats.resendAsks} times; ${reconnects} reconnects`,
      );
      check(
        "damaged path",
        through.ok && relay.bursts > 0,
        `sha256 of what arrived ${through.ours.slice(0, 16)}… = sha256 computed in vm-1 ${through.theirs?.slice(0, 16) ?? "(none)"}…, exit status ${through.status}`,
      );
    } finally {
      await relay.close();
    }

    say(`[4/11] a file round trip through vm-2`);
    const original = join(dir, "original.bin");
    const remote = join(dir, "vm-2", "received.bin");
    const back = join(dir, "back.bin");
    await mkdir(join(dir, "vm-2"));
    await writeFile(original, randomBytes(opts.fileBytes));
    await chmod(original, 0o640);
    const put = await putFile(vm2, original, remote);
    const got = await getFile(vm2, remote, back);
    const sha = (path: string) =>
      readFile(path).then((b) => createHash("sha256").update(b).digest("hex"));
    const [a, b] = await Promise.all([sha(original), sha(back)]);
    say(`      put ${formatBytes(put.size)} to vm-2:${remote}, got it back to ${back}`);
    check(
      "files",
      a === b && put.sha256 === a && got.sha256 === a && got.mode === 0o640,
      `sha256 equal on both trips (${a.slice(0, 16)}…), mode ${got.mode.toString(8)} kept; agent pid ${info2.agent.pid}`,
    );

    say(`[5/11] live telemetry from vm-3 for ${opts.telemetrySeconds} s`);
    // Watched for --telemetry-seconds, and on until a second sample has come however busy the
    // machine is (a sample is due every 500 ms; 30 s is the outer bound).
    const stop = new AbortController();
    let samples = 0;
    let elapsed = false;
    const timer = setTimeout(() => {
      elapsed = true;
      if (samples >= 2) stop.abort();
    }, opts.telemetrySeconds * 1000);
    const bound = setTimeout(() => stop.abort(), Math.max(30, opts.telemetrySeconds) * 1000);
    for await (const s of watchTelemetry(vm3, { intervalMs: 500, signal: stop.signal })) {
      samples++;
      if (elapsed && samples >= 2) stop.abort();
      const rx = s.net.reduce((sum, n) => sum + n.rxBytes, 0);
      say(
        `      ${new Date(s.t).toISOString().slice(11, 23)}  cpu ${(s.cpu.usage * 100).toFixed(1).padStart(5)}%  memory ${formatBytes(s.memory.usedBytes)} of ${formatBytes(s.memory.totalBytes)}  load ${s.load.map((l) => l.toFixed(2)).join(" ")}  net rx ${formatBytes(rx)}`,
      );
    }
    clearTimeout(timer);
    clearTimeout(bound);
    check("telemetry", samples >= 2, `${samples} samples streamed until the watch was cancelled`);

    say("[6/11] a coordinated fleet run: all three agents start together, stats merged live");
    const fleet = await runFleetDemo(
      AGENTS.map((name) => [name, `unix:${join(dir, `${name}.sock`)}`] as const),
      dir,
      opts.fleetSeconds,
      say,
    );
    const mixed = fleet.stages.find((s) => s.name === "mixed");
    const reads = mixed?.operations.read;
    const perAgent = fleet.agents.reduce(
      (sum, a) => sum + (a.stages[1]?.operations.read?.count ?? 0),
      0,
    );
    say(
      `      merged over 3 agents: ${reads?.count ?? 0} reads, p50 ${formatUs(reads?.latencyUs.p50 ?? 0)} p99 ${formatUs(reads?.latencyUs.p99 ?? 0)} p99.9 ${formatUs(reads?.latencyUs.p999 ?? 0)}; start spread ${mixed?.startSpreadMs?.toFixed(2) ?? "?"} ms`,
    );
    check(
      "fleet",
      fleet.outcome === "completed" &&
        reads !== undefined &&
        reads.count === perAgent &&
        reads.errors === 0,
      `every agent completed both stages (exit ${fleet.exitCode}); merged reads ${reads?.count ?? 0} = the agents' own counts added (${perAgent})`,
    );

    say("[7/11] helper processes: a pool of two JSON-RPC helpers, one crashes with work in it");
    const helpers = await runHelperDemo(dir, 400, say);
    say(
      `      ${helpers.answered} of ${helpers.requests} answered at once, ${helpers.wrong} wrong; ${helpers.strays} stray prints reported as events; ${helpers.exitLine ?? "no exit seen"}`,
    );
    check(
      "helpers",
      helpers.wrong === 0 &&
        helpers.otherFailures === 0 &&
        helpers.failedOnExit > 0 &&
        helpers.answered + helpers.failedOnExit === helpers.requests &&
        helpers.restarted &&
        helpers.retriedOk,
      `the ${helpers.failedOnExit} requests waiting in the crashed helper failed HELPER_EXITED (none lost, none answered twice); it was restarted, and asked again they were all answered right`,
    );

    say("[8/11] the mediator: four VMs on shared folders submit to two pools with priorities");
    const mediated = await runMediatorDemo(dir, say);
    for (const line of formatStatus(mediated.status).split("\n")) say(`      ${line}`);
    check(
      "mediator",
      mediated.answered === mediated.submitted && mediated.wrong === 0 && mediated.repeated === 0,
      `${mediated.answered} of ${mediated.submitted} replies arrived, each to the VM that asked, each from one run in its worker`,
    );

    say("[9/11] the channel itself: frames through a channel that misbehaves the way real ones do");
    const wire = runWireDemo(Date.now() % 2 ** 31, 1000);
    say(
      `      sent ${wire.sent} frames with ${wire.injected.logLines} stray log lines, ${wire.injected.halfFrames} half frames, ${wire.injected.hugeHeaders} headers claiming 4 GiB and ${wire.injected.randomBytes} random bytes between them, ${wire.corrupted} corrupted in flight`,
    );
    check(
      "wire",
      wire.ok,
      `received every intact frame (${wire.received}) in order, byte-exact; ${wire.invented} invented; peak buffered ${formatBytes(wire.peakBufferedBytes)}`,
    );

    say("[10/11] NATS: an agent reached by its id through a nats-server restarted mid-command");
    const nats = await runNatsDemo(bin, say);
    if (nats.skipped !== undefined) say(`      skipped: ${nats.skipped}`);
    else check("nats", nats.ok, nats.detail);

    say("[11/11] the host daemon: it holds the three agents; any command reaches them by id");
    const served = await runDaemonDemo(
      AGENTS.map((name) => [name, `unix:${join(dir, `${name}.sock`)}`] as const),
      dir,
      say,
    );
    try {
      say(
        `      guestlink exec @vm-1 -- sh -c 'echo $$ answered through the daemon': ${served.viaDaemon}`,
      );
      check(
        "daemon",
        served.up === AGENTS.length && /answered through the daemon$/.test(served.viaDaemon),
        `${served.up} of ${AGENTS.length} agents up in the daemon; exec @vm-1 answered through it`,
      );
      if (served.url !== undefined) say(`      dashboard: ${served.url}`);
      if (opts.keep) {
        say("      --keep: the daemon and the agents stay up until Ctrl-C");
        await new Promise<void>((resolve) => {
          process.once("SIGINT", () => resolve());
          process.once("SIGTERM", () => resolve());
        });
      }
    } finally {
      await served.daemon.close();
    }
    return checks;
  } finally {
    await Promise.allSettled(sessions.map((s) => s.close()));
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
}
