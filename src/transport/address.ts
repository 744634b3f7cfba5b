/**
 * The one parser for every address form (`unix:PATH`, `tcp:HOST:PORT`, `vsock:CID:PORT`,
 * `fc:UDS_PATH:PORT`, `serial:PATH`, `mailbox:FOLDER`, `stdio`, `exec:COMMAND`,
 * `nats://HOST:PORT/AGENT-ID`) and its inverse.
 * Everything that takes an address from a user goes through `parseAddress`, so a typo fails here
 * with a message that says what was wrong and which forms exist, never later as a strange errno.
 */
import { isIPv4, isIPv6 } from "node:net";
import { InvalidAddressError } from "../errors.ts";
import { type NatsAddress, parseNatsAddress, unparseNats } from "./nats-address.ts";

/** The transports an address can name. */
export const AddressKind = {
  UNIX: "unix",
  TCP: "tcp",
  VSOCK: "vsock",
  FC: "fc",
  SERIAL: "serial",
  MAILBOX: "mailbox",
  STDIO: "stdio",
  EXEC: "exec",
  NATS: "nats",
} as const;
export type AddressKind = (typeof AddressKind)[keyof typeof AddressKind];

/** A parsed address; `kind` tells the variants apart. */
export type Address =
  | { readonly kind: "unix"; readonly path: string }
  /** `host` is a name or an IP literal, without brackets; port 0 means "any" when listening. */
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
  | { readonly kind: "vsock"; readonly cid: number; readonly port: number }
  /** Firecracker's host-side vsock: a Unix socket that forwards to guest `port`. */
  | { readonly kind: "fc"; readonly path: string; readonly port: number }
  | { readonly kind: "serial"; readonly path: string }
  | { readonly kind: "mailbox"; readonly folder: string }
  | { readonly kind: "stdio" }
  /** The command line split into words; it is spawned directly, never through a shell. */
  | { readonly kind: "exec"; readonly argv: readonly string[] }
  /** An agent reached through a NATS server or cluster, by its id (see nats-address.ts). */
  | NatsAddress;

/** The accepted forms, for error messages. */
export const ADDRESS_FORMS: Readonly<Record<AddressKind, string>> = {
  unix: "unix:PATH",
  tcp: "tcp:HOST:PORT",
  vsock: "vsock:CID:PORT",
  fc: "fc:UDS_PATH:PORT",
  serial: "serial:PATH",
  mailbox: "mailbox:FOLDER",
  stdio: "stdio",
  exec: "exec:COMMAND",
  nats: "nats://HOST:PORT/AGENT-ID",
};

const ACCEPTED = `accepted forms: ${Object.values(ADDRESS_FORMS).join(", ")}`;
const MAX_TCP_PORT = 65535;
const MAX_U32 = 0xffffffff;
const MAX_HOSTNAME_CHARS = 253;
const HOSTNAME_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
/** Characters a shell would treat specially when unquoted; exec: runs no shell, so we refuse them. */
const SHELL_OPERATORS = new Set(["|", "&", ";", "<", ">", "(", ")", "$", "`"]);
/** Words that need no quoting when formatting an exec command line. */
const PLAIN_WORD = /^[A-Za-z0-9_\-+=.,/:@%^]+$/;

function invalid(input: string, problem: string): InvalidAddressError {
  return new InvalidAddressError(`invalid address ${JSON.stringify(input)}: ${problem}`, {
    details: { address: input },
  });
}

/** Parses an address string; throws `INVALID_ADDRESS` saying what is wrong and what is accepted. */
export function parseAddress(input: string): Address {
  if (typeof input !== "string") {
    throw new InvalidAddressError(`an address must be a string (${ACCEPTED})`);
  }
  if (input.length === 0) throw invalid(input, `it is empty (${ACCEPTED})`);
  if (input.includes("\0")) throw invalid(input, "it contains a NUL character");
  if (input === "stdio") return { kind: "stdio" };
  const colon = input.indexOf(":");
  if (colon < 0) {
    if (input.includes("/")) {
      throw invalid(input, `it names no transport; did you mean unix:${input}? (${ACCEPTED})`);
    }
    throw invalid(input, `it names no transport (${ACCEPTED})`);
  }
  const kind = input.slice(0, colon);
  const rest = input.slice(colon + 1);
  switch (kind) {
    case "unix":
      return { kind, path: needPath(input, kind, rest, "a path") };
    case "serial":
      return { kind, path: needPath(input, kind, rest, "a device path") };
    case "mailbox":
      return { kind, folder: needPath(input, kind, rest, "a folder") };
    case "tcp":
      return parseTcp(input, rest);
    case "vsock":
      return parseVsock(input, rest);
    case "fc":
      return parseFc(input, rest);
    case "exec":
      return { kind, argv: splitCommandLine(input, rest) };
    case "nats":
      return parseNatsAddress(rest, (problem) => invalid(input, problem));
    case "stdio":
      throw invalid(input, "stdio takes nothing after it: write just stdio");
    default:
      throw invalid(input, unknownKind(kind, rest));
  }
}

/**
 * Whether a tcp host can only be reached from this machine: 127.0.0.0/8, ::1 (and its
 * IPv4-mapped form) or the name localhost. Any other name counts as reachable from the network.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIPv4(h)) return h.startsWith("127.");
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return mapped !== null && (mapped[1] as string).startsWith("127.");
}

/** Formats an address in the syntax `parseAddress` reads; `parseAddress(formatAddress(a))` equals `a`. */
export function formatAddress(address: Address): string {
  const text = unparse(address);
  // Re-parsing both validates the fields (ports, empty paths) and keeps the round trip honest.
  parseAddress(text);
  return text;
}

/** Parses a string, or passes an already parsed address through after checking it. */
export function toAddress(address: string | Address): Address {
  if (typeof address === "string") return parseAddress(address);
  return parseAddress(formatAddress(address));
}

function unparse(address: Address): string {
  switch (address.kind) {
    case "unix":
    case "serial":
      return `${address.kind}:${address.path}`;
    case "mailbox":
      return `mailbox:${address.folder}`;
    case "tcp":
      return address.host.includes(":")
        ? `tcp:[${address.host}]:${address.port}`
        : `tcp:${address.host}:${address.port}`;
    case "vsock":
      return `vsock:${address.cid}:${address.port}`;
    case "fc":
      return `fc:${address.path}:${address.port}`;
    case "stdio":
      return "stdio";
    case "exec":
      return `exec:${address.argv.map(quoteWord).join(" ")}`;
    case "nats":
      return unparseNats(address);
    default:
      throw new InvalidAddressError(
        `cannot format an address of kind ${JSON.stringify((address as { kind?: unknown }).kind)} (${ACCEPTED})`,
      );
  }
}

function unknownKind(kind: string, rest: string): string {
  const lower = kind.toLowerCase();
  if (lower !== kind && lower in ADDRESS_FORMS) {
    return `transport names are lower case: did you mean ${lower}:${rest}? (${ACCEPTED})`;
  }
  if (/^\d{1,5}$/.test(rest)) {
    return `unknown transport ${JSON.stringify(kind)}; did you mean tcp:${kind}:${rest}? (${ACCEPTED})`;
  }
  return `unknown transport ${JSON.stringify(kind)} (${ACCEPTED})`;
}

function needPath(input: string, kind: AddressKind, rest: string, what: string): string {
  if (rest.length === 0)
    throw invalid(input, `${kind} address needs ${what}: ${ADDRESS_FORMS[kind]}`);
  return rest;
}

function parseTcp(input: string, rest: string): Address {
  const form = ADDRESS_FORMS.tcp;
  if (rest.startsWith("//")) {
    throw invalid(input, `tcp addresses are ${form}, not URLs: drop the "//"`);
  }
  let host: string;
  let portText: string;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw invalid(input, `IPv6 address has no closing "]": tcp:[IPV6]:PORT`);
    host = rest.slice(1, close);
    if (!isIPv6(host)) throw invalid(input, `${JSON.stringify(host)} is not an IPv6 address`);
    const after = rest.slice(close + 1);
    if (after.length === 0) throw invalid(input, `tcp address needs a port: tcp:[${host}]:PORT`);
    if (!after.startsWith(":")) {
      throw invalid(input, `expected ":PORT" after "]" but found ${JSON.stringify(after)}`);
    }
    portText = after.slice(1);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon < 0) throw invalid(input, `tcp address needs a port: ${form}`);
    host = rest.slice(0, colon);
    portText = rest.slice(colon + 1);
    if (host.includes(":")) {
      throw invalid(input, `IPv6 addresses go in brackets, as in tcp:[::1]:7070`);
    }
    if (host.length === 0) {
      throw invalid(
        input,
        `tcp address needs a host: ${form} (to listen on every interface use 0.0.0.0 or [::])`,
      );
    }
    checkHost(input, host);
  }
  const port = parseNumber(input, portText, MAX_TCP_PORT, "tcp port", form);
  return { kind: "tcp", host, port };
}

function checkHost(input: string, host: string): void {
  if (/^[0-9.]+$/.test(host)) {
    if (!isIPv4(host)) throw invalid(input, `${JSON.stringify(host)} is not a valid IPv4 address`);
    return;
  }
  if (host.length > MAX_HOSTNAME_CHARS) {
    throw invalid(input, `host name is longer than ${MAX_HOSTNAME_CHARS} characters`);
  }
  // A trailing dot (a fully qualified name) is allowed.
  const labels = (host.endsWith(".") ? host.slice(0, -1) : host).split(".");
  if (labels.some((l) => !HOSTNAME_LABEL.test(l))) {
    throw invalid(
      input,
      `${JSON.stringify(host)} is not a host name or IP address (letters, digits, "-", "_" and "." only)`,
    );
  }
}

function parseVsock(input: string, rest: string): Address {
  const form = ADDRESS_FORMS.vsock;
  const parts = rest.split(":");
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
    throw invalid(input, `vsock address needs a context id and a port: ${form}`);
  }
  const cid = parseNumber(input, parts[0] as string, MAX_U32, "vsock CID", form);
  const port = parseNumber(input, parts[1] as string, MAX_U32, "vsock port", form);
  return { kind: "vsock", cid, port };
}

function parseFc(input: string, rest: string): Address {
  const form = ADDRESS_FORMS.fc;
  const colon = rest.lastIndexOf(":");
  if (colon < 0) throw invalid(input, `fc address needs a port after the socket path: ${form}`);
  const path = rest.slice(0, colon);
  if (path.length === 0) {
    throw invalid(input, `fc address needs the path of Firecracker's vsock socket: ${form}`);
  }
  const port = parseNumber(input, rest.slice(colon + 1), MAX_U32, "vsock port", form);
  return { kind: "fc", path, port };
}

function parseNumber(input: string, text: string, max: number, what: string, form: string): number {
  if (text.length === 0) throw invalid(input, `${what} is missing: ${form}`);
  if (!/^\d+$/.test(text)) {
    throw invalid(
      input,
      `${what} must be a decimal number from 0 to ${max}, not ${JSON.stringify(text)}`,
    );
  }
  const value = Number(text);
  if (value > max) throw invalid(input, `${what} ${text} is out of range (0 to ${max})`);
  return value;
}

/**
 * Splits a command line the way a POSIX shell splits words, without any expansion: blanks separate
 * words; single quotes keep everything literally; double quotes keep everything but `\"` and `\\`;
 * outside quotes a backslash takes the next character literally. Unquoted shell operators are
 * refused because no shell runs: a user who writes `exec:a | b` must learn it, not get `"|"` as an
 * argument.
 */
function splitCommandLine(input: string, line: string): string[] {
  const argv: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i] as string;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      if (inWord) argv.push(word);
      word = "";
      inWord = false;
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw invalid(input, `exec command has an unterminated single quote`);
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const d = line[i] as string;
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) {
          word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      if (!closed) throw invalid(input, `exec command has an unterminated double quote`);
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw invalid(input, `exec command ends with a lone backslash`);
      word += line[i + 1];
      inWord = true;
      i += 2;
    } else if (SHELL_OPERATORS.has(c)) {
      throw invalid(
        input,
        `exec commands run without a shell, so an unquoted ${JSON.stringify(c)} would not do what a shell does; quote it, or run a shell yourself: exec:sh -c '...'`,
      );
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) argv.push(word);
  if (argv.length === 0)
    throw invalid(input, `exec address needs a command: ${ADDRESS_FORMS.exec}`);
  if (argv[0] === "") throw invalid(input, `exec command name is empty`);
  return argv;
}

function quoteWord(word: string): string {
  if (PLAIN_WORD.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
