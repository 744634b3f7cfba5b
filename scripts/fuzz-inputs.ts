/**
 * The fuzzer's inputs (scripts/fuzz.ts): what one connection sends, made from a seed. Most begin
 * with a HELLO (so the frames after it reach the session's every part, not only the handshake)
 * and go on with frames made three ways:
 *
 * - a frame of the wire test vectors (test/wire/vectors.json), its control payload decoded and
 *   mutated field by field (a value swapped for another type, a key dropped or added, a string
 *   cut or grown, a number pushed to a bound), its stream id and number changed;
 * - a frame of the protocol's own shape made up from the names its messages use (CALL of a real
 *   method with made-up params, WINDOW, END, RESET, ACK, CANCEL on made-up streams);
 * - raw damage to an encoded frame: bits flipped, bytes cut, inserted or repeated, a frame cut
 *   short, or bytes of nothing at all.
 *
 * An input is plain data (hex chunks), so the first one that fails is written to a file and
 * sent again by `npm run fuzz -- --replay FILE`.
 */
import { readFileSync } from "node:fs";
import { mulberry32, type Random } from "../src/prng.ts";
import { PROTOCOL_VERSIONS } from "../src/session/messages.ts";
import { decodeControl, encodeControl } from "../src/wire/control.ts";
import { FrameEncoder } from "../src/wire/encode.ts";
import { FrameType } from "../src/wire/frame.ts";

interface VectorFrame {
  name: string;
  frame: { type: number; streamId: number; payloadHex: string; control?: unknown };
}

const vectors = JSON.parse(
  readFileSync(new URL("../test/wire/vectors.json", import.meta.url), "utf8"),
) as { frames: VectorFrame[]; rejects: { hex: string }[] };

/** One connection's bytes: chunks written in turn, `pauseMs` apart. */
export interface FuzzInput {
  chunks: Uint8Array[];
  /** How long to keep the connection open after the last chunk (reading what comes back). */
  holdMs: number;
}

/** What an input is for: which side of the id space its calls use. */
export interface InputShape {
  /** 1: the dialling side is a host calling an agent (odd ids); 2: an agent dialling in. */
  idParity: 1 | 2;
  /** Methods worth calling on this target, with a valid params each to mutate from. */
  methods: readonly [string, unknown][];
}

/** Field names the protocol's messages use: mutations add them where they do not belong. */
const FIELD_NAMES = [
  "method",
  "params",
  "streams",
  "timeoutMs",
  "notify",
  "value",
  "code",
  "message",
  "details",
  "credit",
  "received",
  "resend",
  "sentAt",
  "wallTime",
  "reason",
  "protocol",
  "peer",
  "services",
  "limits",
  "sessionId",
  "resumeToken",
  "incarnation",
  "resume",
  "resumed",
  "resumeRefused",
  "nonce",
  "answers",
  "confirmsClose",
  "uncheckedPayloads",
  "argv",
  "env",
  "cwd",
  "path",
  "size",
  "mode",
  "token",
  "sha256",
  "name",
  "follow",
  "pool",
  "priority",
  "input",
  "key",
  "__proto__",
  "constructor",
];

const EDGE_NUMBERS = [
  0,
  -1,
  1,
  2,
  255,
  256,
  65535,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER,
  1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  1e300,
];

export function inputRandom(seed: number, index: number): Random {
  return mulberry32((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
}

const pick = <T>(r: Random, items: readonly T[]): T => items[Math.floor(r() * items.length)] as T;
const int = (r: Random, n: number) => Math.floor(r() * n);

function randomString(r: Random, max = 24): string {
  const n = int(r, max);
  let s = "";
  for (let i = 0; i < n; i++) {
    const c = r();
    s +=
      c < 0.8
        ? String.fromCharCode(97 + int(r, 26))
        : c < 0.9
          ? pick(r, ["/", ".", "..", "\0", "-", " ", "é", "\u{1F600}"])
          : String.fromCharCode(int(r, 0xffff));
  }
  return s;
}

/** A value of any msgpack type, `depth` levels deep at most. */
function randomValue(r: Random, depth: number): unknown {
  const k = int(r, depth > 0 ? 10 : 7);
  switch (k) {
    case 0:
      return pick(r, EDGE_NUMBERS);
    case 1:
      return int(r, 1000);
    case 2:
      return randomString(r);
    case 3:
      return r() < 0.5;
    case 4:
      return null;
    case 5:
      return new Uint8Array(int(r, 64)).map(() => int(r, 256));
    case 6:
      return pick(r, FIELD_NAMES);
    case 7: {
      const n = int(r, 6);
      return Array.from({ length: n }, () => randomValue(r, depth - 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      const n = int(r, 6);
      for (let i = 0; i < n; i++) {
        o[r() < 0.7 ? pick(r, FIELD_NAMES) : randomString(r, 8)] = randomValue(r, depth - 1);
      }
      return o;
    }
  }
}

/** `value` with one to three things changed somewhere in it. */
export function mutateValue(r: Random, value: unknown, depth = 0): unknown {
  if (depth > 6 || r() < 0.25) {
    // Replace this node: by another type, a bound, or a tweak of what it is.
    if (typeof value === "string" && r() < 0.5) {
      return r() < 0.5 ? value.slice(0, int(r, value.length + 1)) : value + randomString(r, 300);
    }
    if (typeof value === "number" && r() < 0.5) return pick(r, EDGE_NUMBERS);
    return randomValue(r, 3);
  }
  if (Array.isArray(value)) {
    const a = [...value];
    if (a.length === 0 || r() < 0.3) a.push(randomValue(r, 2));
    else {
      const i = int(r, a.length);
      if (r() < 0.2) a.splice(i, 1);
      else a[i] = mutateValue(r, a[i], depth + 1);
    }
    return a;
  }
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    const o = { ...(value as Record<string, unknown>) };
    const keys = Object.keys(o);
    const c = r();
    if (keys.length === 0 || c < 0.2) o[pick(r, FIELD_NAMES)] = randomValue(r, 2);
    else if (c < 0.35) delete o[pick(r, keys)];
    else {
      const k = pick(r, keys);
      o[k] = mutateValue(r, o[k], depth + 1);
    }
    return o;
  }
  return randomValue(r, 2);
}

function encodeAny(value: unknown): Uint8Array {
  try {
    return encodeControl(value);
  } catch {
    return encodeControl({ unencodable: true });
  }
}

/** A valid HELLO, sometimes with absurd or broken parts. */
function hello(r: Random, mutate = true): Uint8Array {
  const nonce = `n${int(r, 1e9)}`;
  const valid = {
    protocol: [...PROTOCOL_VERSIONS],
    peer: { id: `fuzz-${int(r, 1000)}`, hostname: "fuzz", version: "0" },
    services: ["ping"],
    limits: {
      maxFrameBytes: pick(r, [1024, 1024 * 1024, 64 * 1024 * 1024]),
      streamWindowBytes: pick(r, [1, 65536, 2 ** 31 - 1]),
      sessionWindowBytes: pick(r, [1, 262144, 2 ** 31 - 1]),
    },
    sessionId: `s${int(r, 1e9)}`,
    resumeToken: `t${int(r, 1e9)}`,
    incarnation: `i${int(r, 1e9)}`,
    wallTime: Date.now(),
    nonce,
    ...(r() < 0.1
      ? { resume: { sessionId: `s${int(r, 100)}`, token: "t", received: int(r, 100) } }
      : {}),
    ...(r() < 0.1 ? { uncheckedPayloads: true } : {}),
  };
  return encodeAny(!mutate || r() < 0.8 ? valid : mutateValue(r, valid));
}

const SEQUENCED_TYPES = [
  FrameType.CALL,
  FrameType.RESULT,
  FrameType.ERROR,
  FrameType.CANCEL,
  FrameType.DATA,
  FrameType.WINDOW,
  FrameType.END,
  FrameType.RESET,
  FrameType.GOAWAY,
] as const;

/** A frame of the protocol's own shape, made up. */
function protocolFrame(r: Random, shape: InputShape, nextId: () => number): Planned {
  const type = pick(r, [...SEQUENCED_TYPES, FrameType.PING, FrameType.PONG, FrameType.ACK]);
  const id = r() < 0.7 ? nextId() : pick(r, [0, 1, 2, 3, 4, 2 ** 32 - 1, int(r, 1000)]);
  let body: unknown;
  switch (type) {
    case FrameType.CALL: {
      const [method, params] = pick(r, shape.methods);
      const streams: Record<string, number> = {};
      for (const name of ["data", "stdin", "stdout", "stderr"]) {
        if (r() < 0.3) streams[name] = nextId();
      }
      body = {
        method: r() < 0.9 ? method : randomString(r, 40),
        params: r() < 0.5 ? params : mutateValue(r, params),
        ...(Object.keys(streams).length > 0 ? { streams } : {}),
        ...(r() < 0.3 ? { timeoutMs: pick(r, EDGE_NUMBERS) } : {}),
        ...(r() < 0.1 ? { notify: true } : {}),
      };
      break;
    }
    case FrameType.DATA:
      return { type, id, payload: new Uint8Array(pick(r, [0, 1, 100, 70_000])).fill(int(r, 256)) };
    case FrameType.WINDOW:
      body = { credit: pick(r, [1, 1024, 2 ** 31 - 1, int(r, 1e6)]) };
      break;
    case FrameType.RESET:
    case FrameType.ERROR:
      body = { code: pick(r, ["CANCELLED", "X", "HANDLER_FAILED"]), message: randomString(r) };
      break;
    case FrameType.CANCEL:
      body = { reason: randomString(r), code: pick(r, ["CANCELLED", "DEADLINE_EXCEEDED", "X"]) };
      break;
    case FrameType.ACK:
      body = { received: pick(r, EDGE_NUMBERS), ...(r() < 0.5 ? { resend: int(r, 1000) } : {}) };
      break;
    case FrameType.PING:
    case FrameType.PONG:
      body = { sentAt: pick(r, EDGE_NUMBERS), wallTime: Date.now() };
      break;
    case FrameType.RESULT:
      body = { value: randomValue(r, 3) };
      break;
    default:
      body = r() < 0.5 ? {} : { reason: randomString(r) };
  }
  return { type, id, payload: encodeAny(r() < 0.8 ? body : mutateValue(r, body)) };
}

/** A frame of the test vectors with its control payload mutated. */
function vectorFrame(r: Random, nextId: () => number): Planned {
  const v = pick(r, vectors.frames).frame;
  let payload: Uint8Array = Uint8Array.from(Buffer.from(v.payloadHex, "hex"));
  if (v.control !== undefined && r() < 0.8) {
    payload = encodeAny(mutateValue(r, decodeControl(payload)));
  }
  return { type: v.type, id: r() < 0.5 ? v.streamId : nextId(), payload };
}

/** `bytes` damaged: bits flipped, cut, grown, or a piece repeated. */
function damage(r: Random, bytes: Uint8Array): Uint8Array {
  const b = Uint8Array.from(bytes);
  switch (int(r, 5)) {
    case 0:
      for (let i = 0, n = 1 + int(r, 4); i < n && b.length > 0; i++) {
        const at = int(r, b.length);
        b[at] = (b[at] as number) ^ (1 << int(r, 8));
      }
      return b;
    case 1:
      return b.subarray(0, int(r, b.length));
    case 2: {
      const at = int(r, b.length + 1);
      const extra = new Uint8Array(1 + int(r, 40)).map(() => int(r, 256));
      return Uint8Array.from([...b.subarray(0, at), ...extra, ...b.subarray(at)]);
    }
    case 3: {
      const from = int(r, b.length);
      const piece = b.subarray(from, from + 1 + int(r, 64));
      return Uint8Array.from([...b, ...piece]);
    }
    default: {
      // A header field overwritten at random (type, flags, stream, seq, length all live there).
      const at = int(r, Math.min(32, b.length));
      for (let i = at; i < Math.min(b.length, at + 4); i++) b[i] = int(r, 256);
      return b;
    }
  }
}

/** A frame to send: its type, stream id and payload (numbered when it is written). */
interface Planned {
  type: number;
  id: number;
  payload: Uint8Array | undefined;
}

/**
 * A conversation the target takes as well formed: calls of its methods on fresh ids with their
 * streams, bytes and ends on those streams, windows, cancels, pings. Only the params are
 * mutated (now and then), so the frames get past the session and reach the services; the last
 * frame is sometimes damaged, to end it all in a broken frame.
 */
function wellFormed(r: Random, shape: InputShape, nextId: () => number): Planned[] {
  const planned: Planned[] = [];
  const calls: number[] = [];
  const streams: number[] = [];
  const n = 1 + int(r, 30);
  for (let i = 0; i < n; i++) {
    const c = r();
    if (c < 0.35 || calls.length === 0) {
      const [method, params] = pick(r, shape.methods);
      const callId = nextId();
      const named: Record<string, number> = {};
      for (const name of ["data", "stdin", "stdout", "stderr"]) {
        if (r() < 0.35) {
          named[name] = nextId();
          streams.push(named[name] as number);
        }
      }
      calls.push(callId);
      planned.push({
        type: FrameType.CALL,
        id: callId,
        payload: encodeAny({
          method,
          params: r() < 0.6 ? params : mutateValue(r, params),
          ...(Object.keys(named).length > 0 ? { streams: named } : {}),
          ...(r() < 0.5 ? { timeoutMs: int(r, 5_000) } : {}),
        }),
      });
    } else if (c < 0.6 && streams.length > 0) {
      const bytes = new Uint8Array(int(r, 4096)).map(() => 97 + int(r, 26));
      planned.push({ type: FrameType.DATA, id: pick(r, streams), payload: bytes });
    } else if (c < 0.7 && streams.length > 0) {
      const at = int(r, streams.length);
      planned.push({ type: FrameType.END, id: streams[at] as number, payload: undefined });
      streams.splice(at, 1);
    } else if (c < 0.75 && streams.length > 0) {
      const at = int(r, streams.length);
      planned.push({
        type: FrameType.RESET,
        id: streams[at] as number,
        payload: encodeAny({ code: "CANCELLED", message: "fuzz" }),
      });
      streams.splice(at, 1);
    } else if (c < 0.82) {
      planned.push({
        type: FrameType.WINDOW,
        id: streams.length > 0 && r() < 0.7 ? pick(r, streams) : 0,
        payload: encodeAny({ credit: 1 + int(r, 1 << 20) }),
      });
    } else if (c < 0.9) {
      planned.push({
        type: FrameType.CANCEL,
        id: pick(r, calls),
        payload: encodeAny({ reason: "fuzz", ...(r() < 0.3 ? { code: "DEADLINE_EXCEEDED" } : {}) }),
      });
    } else if (c < 0.97) {
      planned.push({
        type: FrameType.PING,
        id: 0,
        payload: encodeAny({ sentAt: r() * 1e6 }),
      });
    } else {
      planned.push({ type: FrameType.GOAWAY, id: 0, payload: encodeAny({ reason: "fuzz" }) });
    }
  }
  return planned;
}

/** Frames of any kind: the test vectors mutated, made-up protocol frames, random bytes. */
function chaotic(r: Random, shape: InputShape, nextId: () => number): (Planned | Uint8Array)[] {
  const out: (Planned | Uint8Array)[] = [];
  const frames = int(r, 40);
  for (let i = 0; i < frames; i++) {
    const c = r();
    if (c < 0.03) {
      out.push(Uint8Array.from(Buffer.from(pick(r, vectors.rejects).hex, "hex")));
    } else if (c < 0.06) {
      out.push(new Uint8Array(int(r, 200)).map(() => int(r, 256)));
    } else {
      out.push(c < 0.4 ? vectorFrame(r, nextId) : protocolFrame(r, shape, nextId));
    }
  }
  return out;
}

/** The input number `index` of a run with `seed`, for a target of `shape`. */
export function makeInput(seed: number, index: number, shape: InputShape): FuzzInput {
  const r = inputRandom(seed, index);
  const checksums = r() < 0.8;
  const encoder = new FrameEncoder({ payloadChecksum: checksums });
  let id = shape.idParity;
  const nextId = () => {
    const v = id;
    id += 2;
    return v;
  };
  const chunks: Uint8Array[] = [];
  const valid = r() < 0.5;
  if (valid || r() < 0.85) {
    const h = encoder.encode({ type: FrameType.HELLO, payload: hello(r, !valid) });
    chunks.push(!valid && r() < 0.1 ? damage(r, h) : h);
  }
  let seq = 0;
  const plan = valid ? wellFormed(r, shape, nextId) : chaotic(r, shape, nextId);
  plan.forEach((f, i) => {
    if (f instanceof Uint8Array) {
      chunks.push(f);
      return;
    }
    const sequenced = (SEQUENCED_TYPES as readonly number[]).includes(f.type);
    const frameSeq = !sequenced
      ? 0
      : valid || r() < 0.9
        ? ++seq
        : pick(r, [0, seq + 5, int(r, 1e6)]);
    let bytes: Uint8Array;
    try {
      bytes = encoder.encode({
        type: f.type,
        streamId: f.id >>> 0,
        seq: frameSeq,
        ...(f.payload === undefined ? {} : { payload: f.payload }),
      });
    } catch {
      return;
    }
    const last = i === plan.length - 1;
    chunks.push((valid ? last && r() < 0.2 : r() < 0.15) ? damage(r, bytes) : bytes);
  });
  // Often written at once; sometimes byte by byte in small pieces (the decoder's partial reads).
  const holdMs = valid ? 20 + int(r, 200) : int(r, 60);
  if (r() < 0.2 && chunks.length > 0) {
    const all = Buffer.concat(chunks);
    const pieces: Uint8Array[] = [];
    for (let at = 0; at < all.length; ) {
      const n = 1 + int(r, 50);
      pieces.push(all.subarray(at, at + n));
      at += n;
    }
    return { chunks: pieces, holdMs };
  }
  return { chunks, holdMs };
}

/** An input as JSON (for the file a failure is saved in) and back. */
export function inputToJson(input: FuzzInput): { chunks: string[]; holdMs: number } {
  return { chunks: input.chunks.map((c) => Buffer.from(c).toString("hex")), holdMs: input.holdMs };
}

export function inputFromJson(json: { chunks: string[]; holdMs: number }): FuzzInput {
  return {
    chunks: json.chunks.map((h) => Uint8Array.from(Buffer.from(h, "hex"))),
    holdMs: json.holdMs,
  };
}
