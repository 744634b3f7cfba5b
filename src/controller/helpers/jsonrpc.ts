/**
 * JSON-RPC 2.0 over lines (NDJSON), as a helper process speaks it (issue 16's `jsonrpc`
 * protocol). Both sides may send requests and notifications; this side's requests carry ids
 * and deadlines, the other side's are served by handlers. A line that is not JSON-RPC 2.0 (a
 * stray `print`, an answer to no request) is reported and changes nothing around it. The peer
 * knows nothing of processes: it takes lines in (`receive`) and writes lines out through the
 * function it was given, so the helper's lifecycle and these rules are tested apart.
 */
import type { CallOptions } from "../../abort.ts";
import { GuestlinkError } from "../../errors.ts";
import { RemoteError } from "../../session/call.ts";
import { raceCallOptions } from "../../transport/call-options.ts";

/** Serves a request (its result is the answer) or a notification (its result is dropped). */
export type RpcHandler = (params: unknown, context: RpcContext) => unknown;

export interface RpcContext {
  method: string;
  /** Aborted when the helper exits before the answer was written. */
  signal: AbortSignal;
}

/** What the peer reports that is not an answer to one of its requests. */
export interface RpcHooks {
  /** A line that is not a JSON-RPC 2.0 message this side can use, and why. */
  stray(line: string, reason: string): void;
  /** A notification from the other side that no handler takes. */
  notification(method: string, params: unknown): void;
  /** A handler failed while serving a notification (there is no one to answer). */
  handlerFailed(method: string, err: unknown): void;
}

/** JSON-RPC's own error codes. */
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_REQUEST = -32600;
/** Where a handler's error carries no numeric code of its own (JSON-RPC's server-error range). */
export const RPC_HANDLER_FAILED = -32000;

interface Pending {
  method: string;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

type Id = number | string;

export class JsonRpcPeer {
  readonly #write: (line: string) => Promise<void>;
  readonly #hooks: RpcHooks;
  readonly #pending = new Map<Id, Pending>();
  readonly #handlers = new Map<string, RpcHandler>();
  /** Requests from the other side still being served, so an exit can abort them. */
  readonly #serving = new Set<AbortController>();
  #nextId = 1;

  constructor(write: (line: string) => Promise<void>, hooks: RpcHooks) {
    this.#write = write;
    this.#hooks = hooks;
  }

  /** Requests sent and not yet answered. */
  get outstanding(): number {
    return this.#pending.size;
  }

  /** Calls `method` on the other side; resolves with its result, rejects with its error. */
  request(method: string, params?: unknown, options?: CallOptions): Promise<unknown> {
    const id = this.#nextId++;
    const answered = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { method, resolve, reject });
    });
    const written = this.#write(encode({ jsonrpc: "2.0", id, method, params }));
    written.catch((err: unknown) => this.#settle(id)?.reject(err));
    return raceCallOptions(answered, options, {
      onDeadline: () =>
        new GuestlinkError(
          "DEADLINE_EXCEEDED",
          `the helper did not answer ${method} before the deadline`,
          { details: { method, id } },
        ),
      // A late answer then finds no request and is reported as stray.
      cancel: () => this.#pending.delete(id),
    });
  }

  /** Sends a notification: no id, no answer. Resolves once written. */
  notify(method: string, params?: unknown): Promise<void> {
    return this.#write(encode({ jsonrpc: "2.0", method, params }));
  }

  /** Serves `method` when the other side requests or notifies it; one handler per method. */
  handle(method: string, handler: RpcHandler): void {
    this.#handlers.set(method, handler);
  }

  /** One line from the other side. */
  receive(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.#hooks.stray(line, "not JSON");
      return;
    }
    if (Array.isArray(message)) {
      if (message.length === 0) {
        this.#hooks.stray(line, "an empty batch");
        return;
      }
      this.#receiveBatch(line, message);
      return;
    }
    const answer = this.#receiveOne(line, message);
    if (answer !== undefined) void answer.then((reply) => this.#send(reply));
  }

  /** The other side is gone: every request waiting for it fails with `err`. */
  failAll(err: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
    for (const serving of this.#serving) serving.abort(err);
    this.#serving.clear();
  }

  #receiveBatch(line: string, messages: unknown[]): void {
    const answers: Promise<object | undefined>[] = [];
    for (const message of messages) {
      const answer = this.#receiveOne(line, message);
      if (answer !== undefined) answers.push(answer);
    }
    if (answers.length === 0) return;
    void Promise.all(answers).then((replies) => {
      const batch = replies.filter((r) => r !== undefined);
      if (batch.length > 0) this.#send(batch);
    });
  }

  /** Handles one message; for a request, the promise of its answer. */
  #receiveOne(line: string, message: unknown): Promise<object | undefined> | undefined {
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      this.#hooks.stray(line, "not a JSON-RPC object");
      return undefined;
    }
    const m = message as Record<string, unknown>;
    if (m.jsonrpc !== "2.0") {
      this.#hooks.stray(line, 'no "jsonrpc": "2.0"');
      return undefined;
    }
    const hasId = "id" in m;
    if (typeof m.method === "string") {
      if (!hasId) {
        this.#notified(m.method, m.params);
        return undefined;
      }
      if (!isId(m.id))
        return Promise.resolve(invalidRequest(m.id, "id must be a string or number"));
      return this.#serve(m.id, m.method, m.params);
    }
    if (hasId && ("result" in m || "error" in m)) {
      this.#answered(line, m);
      return undefined;
    }
    if (hasId && isId(m.id) && "method" in m) {
      return Promise.resolve(invalidRequest(m.id, "method must be a string"));
    }
    this.#hooks.stray(line, "neither a request, a notification nor an answer");
    return undefined;
  }

  #answered(line: string, m: Record<string, unknown>): void {
    const pending = isId(m.id) ? this.#settle(m.id) : undefined;
    if (pending === undefined) {
      this.#hooks.stray(line, "an answer to no request waiting for one");
      return;
    }
    if ("error" in m) pending.reject(remoteError(pending.method, m.error));
    else pending.resolve(m.result);
  }

  #settle(id: Id): Pending | undefined {
    const pending = this.#pending.get(id);
    if (pending !== undefined) this.#pending.delete(id);
    return pending;
  }

  #notified(method: string, params: unknown): void {
    const handler = this.#handlers.get(method);
    if (handler === undefined) {
      this.#hooks.notification(method, params);
      return;
    }
    const serving = new AbortController();
    this.#serving.add(serving);
    new Promise((resolve) => resolve(handler(params, { method, signal: serving.signal })))
      .catch((err: unknown) => this.#hooks.handlerFailed(method, err))
      .finally(() => this.#serving.delete(serving));
  }

  async #serve(id: Id, method: string, params: unknown): Promise<object | undefined> {
    const handler = this.#handlers.get(method);
    if (handler === undefined) {
      return {
        jsonrpc: "2.0",
        id,
        error: {
          code: RPC_METHOD_NOT_FOUND,
          message: `no handler for ${method}`,
          data: { available: [...this.#handlers.keys()] },
        },
      };
    }
    const serving = new AbortController();
    this.#serving.add(serving);
    try {
      const result = await handler(params, { method, signal: serving.signal });
      // Nobody is left to answer once the helper exited.
      if (serving.signal.aborted) return undefined;
      return { jsonrpc: "2.0", id, result: result ?? null };
    } catch (err) {
      if (serving.signal.aborted) return undefined;
      return { jsonrpc: "2.0", id, error: errorObject(err) };
    } finally {
      this.#serving.delete(serving);
    }
  }

  #send(reply: object | undefined): void {
    if (reply === undefined) return;
    // An answer that cannot be written has no one to tell: the helper is gone, and its exit
    // is reported on its own.
    this.#write(encode(reply)).catch(() => {});
  }
}

function isId(id: unknown): id is Id {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id));
}

function encode(message: object): string {
  return JSON.stringify(message);
}

function invalidRequest(id: unknown, message: string): object {
  return {
    jsonrpc: "2.0",
    id: isId(id) ? id : null,
    error: { code: RPC_INVALID_REQUEST, message },
  };
}

/** A handler's failure as a JSON-RPC error object: its numeric `code` if it has one. */
function errorObject(err: unknown): { code: number; message: string; data?: unknown } {
  const e = err as { code?: unknown; message?: unknown; data?: unknown } | null;
  const message = typeof e?.message === "string" ? e.message : String(err);
  if (typeof e?.code === "number" && Number.isInteger(e.code)) {
    return { code: e.code, message, data: e.data };
  }
  return {
    code: RPC_HANDLER_FAILED,
    message,
    data: typeof e?.code === "string" ? { code: e.code } : undefined,
  };
}

/** The helper's error answer as a RemoteError: `remoteCode` is its JSON-RPC code. */
function remoteError(method: string, error: unknown): RemoteError {
  const e = (typeof error === "object" && error !== null ? error : {}) as Record<string, unknown>;
  const code = typeof e.code === "number" ? e.code : RPC_HANDLER_FAILED;
  const message = typeof e.message === "string" ? e.message : JSON.stringify(error);
  return new RemoteError(String(code), `the helper's ${method} failed: ${message}`, {
    method,
    data: e.data,
  });
}
