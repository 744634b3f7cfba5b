/**
 * Figures for the QEMU guest, printed for people (or as JSON with --json); never run by
 * `npm test`, and nothing here asserts on time.
 *
 *   npx tsx test/e2e/qemu/figures.ts [--json] [--runs N] [--mib N]
 *
 * - boot: QEMU started → the agent answers `info` (and → init's start line, for the echo guest)
 * - `guestlink exec ADDR -- true`: the median of N runs of the CLI, and of N calls in one session
 *   through the library (openSession + remoteExec), which leaves out node's start-up on the host
 * - throughput of the agent's exec streams, each way
 * - time to resume after a cut: a proxy (cut-proxy.ts) breaks the connection in the middle of a
 *   stream; from the cut to the session's `resumed` event (the CLI's library redials with its
 *   backoff, handshakes and replays), and the `downMs` the session itself reports
 * - all of that over tcp (user-mode networking) and over the virtio-serial port (serial:)
 * - the bare virtio-serial port (guestlink.mode=echo, bare-port.cjs): host→guest, guest→host
 *   from node and from busybox dd, and a round trip; what the agent's serial figures are read
 *   against
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { parseArgs } from "node:util";
import { openSession, remoteExec } from "../../../src/index.ts";
import type { Session } from "../../../src/session/session.ts";
import { BarePort, type Transfer } from "./bare-port.ts";
import { CutProxy, upstreamOf } from "./cut-proxy.ts";
import { describeRun, runGuestlink } from "./host.ts";
import { prepareImage } from "./image.ts";
import { bootVm, GUEST_SERIAL_LISTEN, type Vm } from "./vm.ts";

const { values: flags } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    runs: { type: "string", default: "20" },
    mib: { type: "string", default: "32" },
  },
});
const RUNS = Number(flags.runs);
const BYTES = Number(flags.mib) * 1024 * 1024;

const figures: Record<string, number | string> = {};
function record(name: string, value: number | string, unit = ""): void {
  figures[name] = typeof value === "number" ? Math.round(value * 100) / 100 : value;
  if (!flags.json) {
    const shown = typeof value === "number" ? value.toFixed(value < 10 ? 2 : 1) : value;
    process.stdout.write(`${name.padEnd(64)} ${shown}${unit ? ` ${unit}` : ""}\n`);
  }
}
const progress = (line: string) => process.stderr.write(`  … ${line}\n`);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function counter(): Writable & { bytes: number } {
  const sink = Object.assign(
    new Writable({
      write(chunk: Buffer, _enc, done) {
        sink.bytes += chunk.length;
        done();
      },
    }),
    { bytes: 0 },
  );
  return sink;
}

/** `bytes` zero bytes as a stream, in 64 KiB chunks. */
function zeros(bytes: number): Readable {
  const chunk = Buffer.alloc(64 * 1024);
  let left = bytes;
  return new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, chunk.length);
      left -= n;
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    },
  });
}

async function exec(session: Session, argv: string[], stdin?: Readable): Promise<number> {
  const out = counter();
  const result = await remoteExec(session, { argv }, { stdin, stdout: out, stderr: counter() });
  if (result.status !== 0) throw new Error(`${argv.join(" ")} ended with status ${result.status}`);
  return out.bytes;
}

/** What the agent at `address` does: exec latency (CLI and in-process) and stream throughput. */
async function agentFigures(address: string, label: string): Promise<void> {
  const cliMs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const args = ["exec", address, "--", "true"];
    const r = await runGuestlink(args);
    if (r.code !== 0) throw new Error(describeRun(args, r));
    cliMs.push(r.ms);
  }
  record(`${label}: exec -- true, node bin/guestlink, median of ${RUNS}`, median(cliMs), "ms");

  const session = await openSession(address, { resume: false });
  try {
    const callMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const started = performance.now();
      await exec(session, ["true"]);
      callMs.push(performance.now() - started);
    }
    record(`${label}: exec -- true in one session, median of ${RUNS}`, median(callMs), "ms");

    let started = performance.now();
    const got = await exec(session, ["head", "-c", String(BYTES), "/dev/zero"]);
    if (got !== BYTES) throw new Error(`exec head -c ${BYTES} gave ${got} bytes`);
    record(`${label}: exec output guest→host (${flags.mib} MiB)`, mbPerS(BYTES, started), "MB/s");

    started = performance.now();
    await exec(session, ["sh", "-c", "cat > /dev/null"], zeros(BYTES));
    record(`${label}: exec input host→guest (${flags.mib} MiB)`, mbPerS(BYTES, started), "MB/s");
  } finally {
    await session.close();
  }
}

/** Cuts a stream `CUTS` times through a proxy and times each resume. */
async function resumeFigures(address: string, label: string): Promise<void> {
  const CUTS = Math.min(RUNS, 5);
  const dir = await mkdtemp(join(tmpdir(), "guestlink-figures-"));
  const proxy = await CutProxy.start(upstreamOf(address), dir);
  const session = await openSession(proxy.address);
  const toResumed: number[] = [];
  const down: number[] = [];
  let waiting: ((downMs: number) => void) | undefined;
  let resumedAt = 0;
  session.onEvent((e) => {
    if (e.type !== "resumed") return;
    resumedAt = performance.now();
    waiting?.(e.downMs);
  });
  try {
    for (let i = 0; i < CUTS; i++) {
      const resumed = new Promise<number>((resolve) => {
        waiting = resolve;
      });
      proxy.cutAfter(BYTES / 2);
      const got = await exec(session, ["head", "-c", String(BYTES), "/dev/zero"]);
      if (got !== BYTES) throw new Error(`exec head -c ${BYTES} gave ${got} bytes across a cut`);
      const downMs = await resumed;
      const cut = proxy.cuts[i];
      if (cut === undefined) throw new Error("the proxy did not cut the stream");
      down.push(downMs);
      toResumed.push(resumedAt - cut.at);
    }
  } finally {
    await session.close();
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
  }
  record(`${label}: cut → resumed (redial, handshake), median of ${CUTS}`, median(toResumed), "ms");
  record(`${label}: downMs the session reports, median of ${CUTS}`, median(down), "ms");
}

function mbPerS(bytes: number, startedMs: number): number {
  return bytes / 1e6 / ((performance.now() - startedMs) / 1000);
}

/** The bare port: the best of three of each, since the figure is what the port can do. */
async function bareFigures(vm: Vm): Promise<void> {
  const port = await BarePort.connect(vm.serialSocket);
  const best = async (run: () => Promise<Transfer>) => {
    const all: Transfer[] = [];
    for (let i = 0; i < 3; i++) all.push(await run());
    return Math.max(...all.map((t) => t.mbPerS));
  };
  try {
    const mib = `${flags.mib} MiB, best of 3`;
    record(
      `bare serial: host→guest (node reads, ${mib})`,
      await best(() => port.sink(BYTES)),
      "MB/s",
    );
    record(
      `bare serial: guest→host (node writes, ${mib})`,
      await best(() => port.receive(BYTES, "source")),
      "MB/s",
    );
    record(
      `bare serial: guest→host (busybox dd bs=64k, ${mib})`,
      await best(() => port.receive(BYTES, "dd")),
      "MB/s",
    );
    const echoBytes = Math.min(BYTES, 8 * 1024 * 1024);
    const data = randomBytes(echoBytes);
    record(
      `bare serial: echo round trip (${echoBytes / 1024 / 1024} MiB, best of 3)`,
      await best(async () => {
        const e = await port.echo(data);
        if (!e.back.equals(data)) throw new Error("the echo came back different");
        return e;
      }),
      "MB/s",
    );
  } finally {
    await port.quit();
  }
}

const image = await prepareImage({ log: progress });
record("kernel", `${image.kernelPackage} (uname -r ${image.kernelRelease})`);
record("accelerator", process.env.GUESTLINK_QEMU_ACCEL ?? "tcg");

progress("booting the agent guest (tcp)");
const agentVm = await bootVm({ image });
try {
  record("boot: QEMU start → agent answers info (tcp)", agentVm.readyMs, "ms");
  await agentFigures(agentVm.tcpAddress as string, "agent over tcp");
  await resumeFigures(agentVm.tcpAddress as string, "agent over tcp");
} finally {
  await agentVm.shutdown();
}

progress("booting the agent guest (virtio-serial)");
const serialVm = await bootVm({ image, listen: [GUEST_SERIAL_LISTEN] });
try {
  record("boot: QEMU start → agent answers info (serial)", serialVm.readyMs, "ms");
  await agentFigures(serialVm.serialAddress, "agent over serial");
  await resumeFigures(serialVm.serialAddress, "agent over serial");
} finally {
  await serialVm.shutdown();
}

progress("booting the echo guest (bare virtio-serial)");
const echoVm = await bootVm({ image, mode: "echo" });
try {
  record("boot: QEMU start → echo program started", echoVm.readyMs, "ms");
  await bareFigures(echoVm);
} finally {
  await echoVm.shutdown();
}

if (flags.json) process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
