/**
 * A profiling aid for the session's per-call cost, not a benchmark `npm run bench` runs:
 *
 *   node --import tsx bench/profile-session.ts [--source | --lib DIR...] [--seq N] [--pipe N] [--rounds N]
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/profile-session.ts ...
 *
 * Both ends of an echo session run in this one process over a Unix socket, so a profile shows
 * the client's and the server's work together (their sum is what a one-CPU round trip costs).
 * `--seq N`: N calls one after the other; `--pipe N`: N calls kept 64 in flight. Each is run
 * `--rounds` times; wall and CPU time per call are printed for every round. The library is the tsc
 * build of src/ (as `session.bench.ts` measures), the source under tsx with `--source`, or the
 * builds given with `--lib` (a directory laid out as dist/ is, e.g. from `buildLibrary`). With
 * several `--lib`, their rounds take turns, so an A/B comparison sees the same machine load.
 * `--memory` runs the session pair over the in-memory transport instead: no system calls, so
 * what is left is the JavaScript cost of a call (and the figures are much steadier); without
 * `--lib` it runs the source.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { nodeRuntime } from "../src/platform/node.ts";
import type { Session } from "../src/session/session.ts";
import type { memoryPair } from "../src/transport/memory.ts";
import { buildLibrary, median, now } from "./lib.ts";
import { type GuestlinkLib, loadLib, SOURCE_LIB } from "./session-server.ts";

const args = process.argv.slice(2);
const opt = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const seqCalls = opt("--seq", 50_000);
const pipeCalls = opt("--pipe", 100_000);
const rounds = opt("--rounds", 5);
const DEPTH = 64;
const libDirs = args.flatMap((arg, i) => (args[i - 1] === "--lib" ? [arg] : []));
const overMemory = args.includes("--memory");

/** A client session connected to an echo server session over an in-memory pair. */
async function memorySession(libDir: string | undefined): Promise<Session> {
  const load = (path: string) =>
    import(
      libDir === undefined ? `../src/${path}.ts` : pathToFileURL(join(libDir, `${path}.js`)).href
    );
  const { Session: SessionClass } = (await load("session/session")) as {
    Session: typeof Session;
  };
  const { memoryPair: pair } = (await load("transport/memory")) as {
    memoryPair: typeof memoryPair;
  };
  const { nodeRuntime: runtime } = (await load("platform/node")) as {
    nodeRuntime: typeof nodeRuntime;
  };
  const [a, b] = pair({ highWaterMark: 1024 * 1024 });
  const peer = { id: "x", hostname: "x", version: "0" };
  const server = new SessionClass(b, { role: "server", runtime: runtime(), peer });
  server.handle("echo", (params) => params);
  const client = new SessionClass(a, { role: "client", runtime: runtime(), peer });
  await client.ready;
  return client;
}

const payload = new Uint8Array(64).map((_, i) => (i * 7 + 3) & 0xff);

async function sequential(session: Session, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await session.call("echo", payload);
}

function pipelined(session: Session, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    const one = () => {
      started++;
      session.call("echo", payload).then(() => {
        finished++;
        if (started < n) one();
        else if (finished === n) resolve();
      }, reject);
    };
    for (let i = 0; i < Math.min(DEPTH, n); i++) one();
  });
}

async function measure(ends: { name: string; session: Session }[]): Promise<void> {
  for (const [label, n, fn] of [
    ["sequential", seqCalls, sequential],
    ["64 in flight", pipeCalls, pipelined],
  ] as const) {
    if (n <= 0) continue;
    const wall = ends.map((): number[] => []);
    const cpu = ends.map((): number[] => []);
    for (const end of ends) await fn(end.session, Math.min(n, 5_000));
    for (let r = 0; r < rounds; r++) {
      for (const [i, end] of ends.entries()) {
        const start = now();
        const used = process.cpuUsage();
        await fn(end.session, n);
        const { user, system } = process.cpuUsage(used);
        wall[i]?.push(((now() - start) * 1000) / n);
        cpu[i]?.push((user + system) / n);
      }
    }
    const fmt = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(" ");
    for (const [i, end] of ends.entries()) {
      const w = wall[i] ?? [];
      const c = cpu[i] ?? [];
      process.stdout.write(
        `${label} [${end.name}]: wall us/call ${fmt(w)}; median ${median(w).toFixed(2)}, min ${Math.min(...w).toFixed(2)} (${Math.round(1e6 / median(w))} calls/s); cpu median ${median(c).toFixed(2)}, min ${Math.min(...c).toFixed(2)}\n`,
      );
    }
  }
}

const dir = await mkdtemp(join(os.tmpdir(), "guestlink-prof-"));
try {
  let libs: [string, GuestlinkLib][];
  if (overMemory) {
    const dirs = libDirs.length > 0 ? libDirs : [undefined];
    const ends = await Promise.all(
      dirs.map(async (d) => ({ name: d ?? "source", session: await memorySession(d) })),
    );
    await measure(ends);
    process.exit(0);
  }
  if (libDirs.length > 0) {
    libs = await Promise.all(
      libDirs.map(async (d) => [d, await loadLib(d)] as [string, GuestlinkLib]),
    );
  } else if (args.includes("--source")) {
    libs = [["source", SOURCE_LIB]];
  } else {
    libs = [["build", await loadLib((await buildLibrary(dir)).dir)]];
  }
  const ends = await Promise.all(
    libs.map(async ([name, lib], i) => {
      const path = join(dir, `gl-${i}.sock`);
      const server = await lib.serveSessions(`unix:${path}`, (s) => {
        s.handle("echo", (params) => params);
      });
      return { name, server, session: await lib.openSession(`unix:${path}`) };
    }),
  );
  await measure(ends);
  for (const end of ends) {
    await end.session.close();
    await end.server.close({ abort: true });
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
