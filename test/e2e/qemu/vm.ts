/**
 * Boots the test guest (image.ts) under QEMU and hands back where to reach it: the host end of
 * the virtio-serial port `org.guestlink.0` as a Unix socket (`unix:SOCK`, one client at a time:
 * a QEMU socket chardev accepts the next connection only when the current one has closed) and,
 * with user-mode networking, a host port forwarded to the agent's tcp listener.
 *
 * No QEMU outlives its test: `shutdown()` asks the guest to power off and kills QEMU if it has not
 * exited in time, `kill()` kills it at once, every QEMU still running when this process exits is
 * killed, and a watchdog kills it if this process dies without exiting (a SIGKILL, a runner's
 * timeout).
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AgentInfo } from "../../../src/agent/info.ts";
import { freePort } from "../../helpers/ports.ts";
import { sayQuit, stopAgent, waitForAgent } from "./guest-control.ts";
import type { GuestImage } from "./image.ts";
import { VmConsole } from "./vm-console.ts";

export { VmConsole };

export const GUEST_PORT_NAME = "org.guestlink.0";
export const GUEST_PORT_PATH = `/dev/virtio-ports/${GUEST_PORT_NAME}`;
/** The agent's tcp port in the guest; user-mode networking forwards a host port to it. */
export const GUEST_TCP_PORT = 7070;
/** `--listen` addresses for the agent in the guest. */
export const GUEST_TCP_LISTEN = `tcp:0.0.0.0:${GUEST_TCP_PORT}`;
export const GUEST_SERIAL_LISTEN = `serial:${GUEST_PORT_PATH}`;

/** What guest/init.sh runs: the agent, the raw-port echo (bare-port.cjs), or a console shell. */
export const GuestMode = { AGENT: "agent", ECHO: "echo", SHELL: "shell" } as const;
export type GuestMode = (typeof GuestMode)[keyof typeof GuestMode];

const DEFAULT_BOOT_TIMEOUT_MS = 90_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 20_000;
const DEFAULT_MEMORY_MB = 1024;
/** Ports QEMU failed to forward (taken between our probe and its bind) before giving up. */
const HOSTFWD_ATTEMPTS = 3;
/** The line init prints once the mode's program runs (guest/init.sh). */
const STARTED = /^guestlink-init: (agent|echo|shell) started/;
const INIT_FAILED = /^guestlink-init: FAILED: (.*)$/;
/** What the kernel prints when it powers off (a clean shutdown). */
const POWER_DOWN = /reboot: Power down/;

export interface BootOptions {
  image: GuestImage;
  /** Default "agent". */
  mode?: GuestMode;
  /** Agent mode: the addresses it listens on in the guest (default [GUEST_TCP_LISTEN]). */
  listen?: readonly string[];
  /** A virtio NIC on QEMU's user-mode network (default: when the agent listens on tcp). */
  network?: boolean;
  /**
   * Agent mode: where readiness is checked (the agent must answer `info` there). Default: the
   * forwarded tcp port if there is one, else the serial socket. `false`: ready once init says
   * the agent started, for tests that want to make the first connection themselves.
   */
  readyAddress?: string | false;
  /** Default 90 s (TCG on a loaded machine). */
  bootTimeoutMs?: number;
  /** Default 1024. */
  memoryMb?: number;
  /** Virtual CPUs (default 1: TCG runs one host thread per CPU, and CI machines are small). */
  cpus?: number;
  /** Appended to the kernel command line. */
  kernelArgs?: readonly string[];
  /** Each console line as it arrives (for watching a boot). */
  onConsoleLine?: (line: string) => void;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The harness killed QEMU (it did not exit by itself in time, or `kill()` was called). */
  killed: boolean;
  /** The guest kernel powered off (init's `poweroff -f`), as opposed to QEMU being stopped. */
  poweredOff: boolean;
}

export interface Vm {
  readonly mode: GuestMode;
  readonly pid: number;
  /** The host end of the guest's virtio-serial port org.guestlink.0. */
  readonly serialSocket: string;
  /** `unix:SOCK` for serialSocket: the address a host uses to reach an agent on serial. */
  readonly serialAddress: string;
  /** `tcp:127.0.0.1:PORT` forwarded to guest port 7070, when the VM has a network. */
  readonly tcpAddress: string | undefined;
  /** Where readiness was checked, and where `shutdown()` reaches the agent. */
  readonly agentAddress: string | undefined;
  /** The agent's answer to `info` at readiness (agent mode with a ready address). */
  readonly info: AgentInfo | undefined;
  /** From spawning QEMU to ready: init's start line seen and, in agent mode, `info` answered. */
  readonly readyMs: number;
  /** The guest's serial console (kernel log, init's lines, the agent's stderr). */
  readonly console: VmConsole;
  /** The kernel command line the guest booted with. */
  readonly cmdline: string;
  /** Settles when QEMU has exited. */
  readonly exited: Promise<VmExit>;
  /**
   * Asks the guest to power off (agent: SIGTERM to the agent through exec, after which init
   * powers off; echo: "quit" on the port; shell: `poweroff -f` on the console), and kills QEMU
   * if it has not exited within `timeoutMs`.
   */
  shutdown(options?: { timeoutMs?: number }): Promise<VmExit>;
  /** Kills QEMU now. */
  kill(): Promise<VmExit>;
}

/** QEMU processes of this process that have not exited. */
const running = new Set<ChildProcessWithoutNullStreams>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Kills QEMU, and removes its folder, if this process dies without running its exit handlers.
 * It ends by itself within a second once QEMU has exited.
 */
function startWatchdog(qemuPid: number, dir: string): void {
  const script =
    'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -0 "$1" 2>/dev/null || { kill -9 "$2"; [ -n "$3" ] && rm -rf "$3"; } 2>/dev/null';
  const keep = process.env.GUESTLINK_QEMU_KEEP === "1";
  spawn(
    "sh",
    ["-c", script, "qemu-watchdog", String(process.pid), String(qemuPid), keep ? "" : dir],
    {
      detached: true,
      stdio: "ignore",
    },
  ).unref();
}

class BootFailed extends Error {
  override name = "BootFailed";
}

/** Boots a VM and resolves once it is ready (see `Vm.readyMs`); rejects with the console's tail. */
export async function bootVm(options: BootOptions): Promise<Vm> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bootOnce(options);
    } catch (err) {
      const portTaken = err instanceof BootFailed && /host forwarding rule/i.test(err.message);
      if (!portTaken || attempt >= HOSTFWD_ATTEMPTS) throw err;
    }
  }
}

async function bootOnce(options: BootOptions): Promise<Vm> {
  const { image } = options;
  const mode = options.mode ?? GuestMode.AGENT;
  const listen = mode === GuestMode.AGENT ? (options.listen ?? [GUEST_TCP_LISTEN]) : [];
  for (const a of [...listen, ...(options.kernelArgs ?? [])]) {
    if (/\s/.test(a))
      throw new Error(`kernel command line words take no spaces: ${JSON.stringify(a)}`);
  }
  const tcpListen = listen.find((a) => a.startsWith("tcp:"));
  const network = options.network ?? tcpListen !== undefined;
  const guestPort = tcpListen
    ? Number(tcpListen.slice(tcpListen.lastIndexOf(":") + 1))
    : GUEST_TCP_PORT;
  const hostPort = network ? await freePort() : undefined;
  const dir = await mkdtemp(join(tmpdir(), "gl-qemu-"));
  const serialSocket = join(dir, "serial.sock");
  const serialAddress = `unix:${serialSocket}`;
  const tcpAddress = hostPort === undefined ? undefined : `tcp:127.0.0.1:${hostPort}`;

  const cmdline = [
    "console=ttyS0",
    "panic=-1", // a panic reboots, which -no-reboot turns into QEMU exiting: nothing hangs
    "loglevel=4", // the console is slow under TCG; dmesg still has everything
    `guestlink.mode=${mode}`,
    ...listen.map((a) => `guestlink.listen=${a}`),
    ...(network ? ["guestlink.net=1"] : []),
    ...(options.kernelArgs ?? []),
  ].join(" ");
  const args: string[] = [];
  const add = (...words: string[]) => args.push(...words);
  add("-accel", process.env.GUESTLINK_QEMU_ACCEL ?? "tcg", "-cpu", "max");
  add("-smp", String(options.cpus ?? 1), "-m", String(options.memoryMb ?? DEFAULT_MEMORY_MB));
  add("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio");
  add("-kernel", image.kernel, "-initrd", image.initrd, "-append", cmdline);
  add("-chardev", `socket,id=gl0,path=${serialSocket},server=on,wait=off`);
  add("-device", "virtio-serial-pci");
  add("-device", `virtserialport,chardev=gl0,name=${GUEST_PORT_NAME}`);
  if (hostPort !== undefined) {
    add("-netdev", `user,id=n0,hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`);
    // No option ROM: the kernel is booted directly, so SeaBIOS need not load iPXE.
    add("-device", "virtio-net-pci,netdev=n0,romfile=");
  }

  const started = performance.now();
  const child = spawn(image.qemu, args, { stdio: ["pipe", "pipe", "pipe"] });
  running.add(child);
  const consoleLog = new VmConsole();
  if (options.onConsoleLine) consoleLog.onLine(options.onConsoleLine);
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => consoleLog.push(d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  child.stdin.on("error", () => {});
  let killed = false;
  const exited = new Promise<VmExit>((resolve) => {
    child.on("close", (code, signal) => {
      running.delete(child);
      consoleLog.flush();
      resolve({ code, signal, killed, poweredOff: consoleLog.find(POWER_DOWN) !== undefined });
    });
  }).then(async (exit) => {
    if (process.env.GUESTLINK_QEMU_KEEP !== "1") await rm(dir, { recursive: true, force: true });
    return exit;
  });
  const spawnFailed = once(child, "spawn").then(
    () => undefined,
    (err: Error) => err,
  );
  const spawnError = await spawnFailed;
  if (spawnError) {
    running.delete(child);
    throw new BootFailed(`cannot start ${image.qemu}: ${spawnError.message}`);
  }
  startWatchdog(child.pid as number, dir);

  const kill = async (): Promise<VmExit> => {
    if (child.exitCode === null && child.signalCode === null) {
      killed = true;
      child.kill("SIGKILL");
    }
    return exited;
  };

  const failure = (why: string) =>
    new BootFailed(
      `the ${mode} VM did not become ready: ${why}${stderr.trim() ? `\nQEMU: ${stderr.trim()}` : ""}\nlast console lines:\n${consoleLog.tail()}`,
    );

  const bootTimeoutMs = options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  const deadline = started + bootTimeoutMs;
  const boot = new AbortController();
  let info: AgentInfo | undefined;
  let agentAddress: string | undefined;
  try {
    const gone = exited.then((e) => {
      throw failure(`QEMU exited (${e.signal ? `signal ${e.signal}` : `status ${e.code}`})`);
    });
    const timeout = new Promise<never>((_, reject) => {
      const t = setTimeout(
        () => reject(failure(`not ready within ${bootTimeoutMs} ms`)),
        bootTimeoutMs,
      );
      boot.signal.addEventListener("abort", () => clearTimeout(t));
    });
    const startedLine = new Promise<void>((resolve, reject) => {
      const check = (line: string) => {
        const failed = INIT_FAILED.exec(line);
        if (failed) reject(failure(`init failed: ${failed[1]}`));
        else if (STARTED.test(line)) resolve();
      };
      for (const line of consoleLog.lines) check(line);
      const off = consoleLog.onLine(check);
      boot.signal.addEventListener("abort", off);
    });
    await Promise.race([startedLine, gone, timeout]);
    if (mode === GuestMode.AGENT && options.readyAddress !== false) {
      agentAddress = options.readyAddress ?? tcpAddress ?? serialAddress;
      info = await Promise.race([waitForAgent(agentAddress, deadline, boot.signal), gone, timeout]);
    } else if (mode === GuestMode.AGENT) {
      agentAddress = tcpAddress ?? serialAddress;
    }
  } catch (err) {
    boot.abort();
    await kill();
    throw err;
  }
  boot.abort();
  const readyMs = performance.now() - started;

  const requestPoweroff = async (signal: AbortSignal): Promise<void> => {
    switch (mode) {
      case GuestMode.AGENT:
        if (agentAddress !== undefined) await stopAgent(agentAddress, signal);
        return;
      case GuestMode.ECHO:
        await sayQuit(serialSocket, signal);
        return;
      case GuestMode.SHELL:
        child.stdin.write("poweroff -f\n");
        return;
    }
  };

  return {
    mode,
    pid: child.pid as number,
    serialSocket,
    serialAddress,
    tcpAddress,
    agentAddress,
    info,
    readyMs,
    console: consoleLog,
    cmdline,
    exited,
    async shutdown({ timeoutMs = DEFAULT_SHUTDOWN_TIMEOUT_MS } = {}) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      const signal = AbortSignal.timeout(timeoutMs);
      const timedOut = once(signal, "abort").then(() => "timeout" as const);
      // The request may never be answered (the guest powers off under it): exiting is what counts.
      void requestPoweroff(signal).catch(() => {});
      if ((await Promise.race([exited, timedOut])) === "timeout") return kill();
      return exited;
    },
    kill,
  };
}
