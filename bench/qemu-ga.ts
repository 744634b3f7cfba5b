/**
 * A small client of qemu-guest-agent (`qemu-ga`), for comparing exec with it (`exec.bench.ts`).
 *
 * `QemuGa.start` runs `qemu-ga -m unix-listen -p SOCK -t STATEDIR -f PIDFILE` with every path in
 * a temporary folder (nothing under /var/run), connects once and syncs (`guest-sync` with a
 * random id). Its protocol is QMP-like JSON: one request `{"execute": NAME, "arguments": {...}}`
 * at a time, each answered by one line `{"return": ...}` or `{"error": {"class", "desc"}}`.
 * `exec` is `guest-exec` with `capture-output`, then `guest-exec-status` polled back to back
 * (no sleep) until `exited`; the output comes base64-encoded in `out-data` / `err-data`, and
 * qemu-ga keeps at most 16 MiB of each (GUEST_EXEC_MAX_OUTPUT): beyond that it sets
 * `out-truncated` and drops the rest.
 *
 * Anything unexpected (it does not start, listen or answer, answers with an error or with
 * something that is not the protocol) is a `QemuGaError` saying what, with qemu-ga's stderr.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import net from "node:net";
import { delimiter, join } from "node:path";

export class QemuGaError extends Error {
  override name = "QemuGaError";
}

/** Where qemu-ga usually is when not on PATH (it is a system daemon: sbin). */
const SBIN = ["/usr/sbin", "/usr/local/sbin", "/sbin"];
const LISTEN_TIMEOUT_MS = 10_000;
const ANSWER_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 3_000;

/** The path of an executable `qemu-ga` on PATH or in the usual sbin folders, or undefined. */
export function findQemuGa(path = process.env.PATH ?? ""): string | undefined {
  const dirs = [...path.split(delimiter).filter((dir) => dir !== ""), ...SBIN];
  for (const dir of dirs) {
    const file = join(dir, "qemu-ga");
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** What `guest-exec-status` said once the command exited. */
export interface GuestExecResult {
  /** The exit status, when it exited (not killed). */
  exitcode: number | undefined;
  /** The signal that ended it, when killed. */
  signal: number | undefined;
  out: Buffer;
  err: Buffer;
  outTruncated: boolean;
  errTruncated: boolean;
  /** How many `guest-exec-status` requests it took until `exited`. */
  polls: number;
}

interface Answer {
  return?: unknown;
  error?: { class?: unknown; desc?: unknown };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A qemu-ga process listening on a Unix socket, and one connection to it. */
export class QemuGa {
  readonly binary: string;
  readonly socketPath: string;
  /** `qemu-ga --version`'s figure, e.g. "7.2.22", when it printed one. */
  version = "";
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #stderr = "";
  #socket: net.Socket | undefined;
  /** Bytes received after the last complete line. */
  #pending: Buffer[] = [];
  #lines: Buffer[] = [];
  #waiting: ((line: Buffer | Error) => void) | undefined;
  #closedBecause: Error | undefined;

  private constructor(binary: string, dir: string) {
    this.binary = binary;
    this.socketPath = join(dir, "qemu-ga.sock");
    const args = ["-m", "unix-listen", "-p", this.socketPath, "-t", dir];
    this.#child = spawn(binary, [...args, "-f", join(dir, "qemu-ga.pid")], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.#child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      if (this.#stderr.length < 16_384) this.#stderr += text;
    });
    this.#exited = new Promise((resolve) => {
      this.#child.once("error", (err) => {
        this.#stderr += `${err.message}\n`;
        resolve();
      });
      this.#child.once("exit", () => resolve());
    });
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  /** Starts `binary` with its socket and state in `dir` (which must exist), connects and syncs. */
  static async start(binary: string, dir: string): Promise<QemuGa> {
    const ga = new QemuGa(binary, dir);
    try {
      ga.version = await versionOf(binary);
      await ga.#connect();
      await ga.#sync();
      return ga;
    } catch (err) {
      await ga.stop();
      throw err;
    }
  }

  /** Runs `path args` (no shell) through guest-exec and polls its status until it exited. */
  async exec(path: string, args: readonly string[]): Promise<GuestExecResult> {
    const started = await this.request("guest-exec", {
      path,
      arg: args,
      "capture-output": true,
    });
    const pid = isObject(started) ? started.pid : undefined;
    if (typeof pid !== "number") {
      throw this.#error(`guest-exec ${path}: answered ${JSON.stringify(started)}, not a pid`);
    }
    let polls = 0;
    for (;;) {
      polls++;
      const status = await this.request("guest-exec-status", { pid });
      if (!isObject(status) || typeof status.exited !== "boolean") {
        throw this.#error(`guest-exec-status ${pid}: answered ${brief(status)}`);
      }
      if (!status.exited) continue;
      const data = (key: string): Buffer =>
        typeof status[key] === "string" ? Buffer.from(status[key], "base64") : Buffer.alloc(0);
      const num = (key: string): number | undefined =>
        typeof status[key] === "number" ? status[key] : undefined;
      return {
        exitcode: num("exitcode"),
        signal: num("signal"),
        out: data("out-data"),
        err: data("err-data"),
        outTruncated: status["out-truncated"] === true,
        errTruncated: status["err-truncated"] === true,
        polls,
      };
    }
  }

  /** Sends one command and waits for its answer; its "return" value, or a QemuGaError. */
  async request(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    const socket = this.#socket;
    if (!socket || this.#closedBecause) {
      throw this.#closedBecause ?? this.#error(`${execute}: not connected`);
    }
    socket.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const line = await this.#nextLine(execute);
    let answer: Answer;
    try {
      answer = JSON.parse(line.toString("utf8")) as Answer;
    } catch {
      throw this.#error(`${execute}: answered a line that is not JSON: ${brief(line.toString())}`);
    }
    if (!isObject(answer)) throw this.#error(`${execute}: answered ${brief(answer)}`);
    if (answer.error !== undefined) {
      const { class: kind, desc } = isObject(answer.error) ? answer.error : {};
      throw this.#error(`${execute} failed: ${String(kind)}: ${String(desc)}`);
    }
    if (!("return" in answer)) throw this.#error(`${execute}: answered ${brief(answer)}`);
    return answer.return;
  }

  /** Closes the connection and stops qemu-ga (SIGTERM, then SIGKILL); idempotent. */
  async stop(): Promise<void> {
    this.#closedBecause ??= new QemuGaError("qemu-ga was stopped");
    this.#socket?.destroy();
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill("SIGTERM");
    }
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), STOP_GRACE_MS);
    await this.#exited;
    clearTimeout(timer);
  }

  #error(what: string): QemuGaError {
    const stderr = this.#stderr.trim();
    return new QemuGaError(
      `qemu-ga (${this.binary}): ${what}${stderr ? `; stderr: ${stderr}` : ""}`,
    );
  }

  #running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Connects to the socket once qemu-ga listens on it. */
  async #connect(): Promise<void> {
    const deadline = performance.now() + LISTEN_TIMEOUT_MS;
    for (;;) {
      if (!this.#running()) {
        await this.#exited;
        const how = this.#child.signalCode ?? this.#child.exitCode;
        throw this.#error(`exited (${how}) before it listened on ${this.socketPath}`);
      }
      const socket = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.connect({ path: this.socketPath });
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(undefined));
      });
      if (socket) {
        this.#attach(socket);
        return;
      }
      if (performance.now() > deadline) {
        throw this.#error(`did not listen on ${this.socketPath} within ${LISTEN_TIMEOUT_MS} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      let from = 0;
      for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, from)) {
        this.#pending.push(chunk.subarray(from, nl));
        this.#lines.push(
          this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending),
        );
        this.#pending = [];
        from = nl + 1;
      }
      if (from < chunk.length) this.#pending.push(chunk.subarray(from));
      this.#wake();
    });
    const closed = (why: string) => {
      this.#closedBecause ??= this.#error(why);
      this.#wake();
    };
    socket.once("error", (err) => closed(`the connection failed: ${err.message}`));
    socket.once("close", () => closed("closed the connection"));
  }

  #wake(): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    const line = this.#lines.shift();
    if (line !== undefined) {
      this.#waiting = undefined;
      waiting(line);
    } else if (this.#closedBecause) {
      this.#waiting = undefined;
      waiting(this.#closedBecause);
    }
  }

  #nextLine(execute: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting = undefined;
        reject(this.#error(`${execute}: no answer within ${ANSWER_TIMEOUT_MS} ms`));
      }, ANSWER_TIMEOUT_MS);
      this.#waiting = (line) => {
        clearTimeout(timer);
        if (line instanceof Error) reject(line);
        else resolve(line);
      };
      this.#wake();
    });
  }

  /**
   * guest-sync with a random id: qemu-ga answers with the same id once everything sent before
   * it has been answered; any line before that is left over from before and dropped.
   */
  async #sync(): Promise<void> {
    const id = Math.floor(Math.random() * 2 ** 31);
    const socket = this.#socket as net.Socket;
    socket.write(`${JSON.stringify({ execute: "guest-sync", arguments: { id } })}\n`);
    for (let i = 0; i < 16; i++) {
      const line = (await this.#nextLine("guest-sync")).toString("utf8");
      let answer: unknown;
      try {
        answer = JSON.parse(line);
      } catch {
        continue;
      }
      if (isObject(answer) && answer.return === id) return;
      if (isObject(answer) && answer.error !== undefined) {
        throw this.#error(`guest-sync failed: ${brief(answer)}`);
      }
    }
    throw this.#error("guest-sync: no answer with its id");
  }
}

/** The start of a value as JSON, for a message. */
function brief(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** `qemu-ga --version`'s version figure, or "" when it printed none. */
function versionOf(binary: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["--version"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => (out += text));
    child.stderr.resume();
    child.once("error", (err) =>
      reject(new QemuGaError(`qemu-ga (${binary}) could not start: ${err.message}`)),
    );
    child.once("close", () => resolve(/Guest Agent\s+(\S+)/.exec(out)?.[1] ?? ""));
  });
}
