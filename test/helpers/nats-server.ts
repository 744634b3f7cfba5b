/**
 * Real NATS servers (Debian's nats-server) for the tests, on free loopback ports: one, or a
 * cluster whose servers route to each other. Each is started from a config file written to a
 * temporary folder, can be killed (SIGKILL, as a crash) and started again on the same ports, and
 * is killed when the test process exits. Tests that use it skip without nats-server
 * (`requires("nats-server")`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { freePort } from "./ports.ts";
import { until } from "./until.ts";

export interface NatsServerOptions {
  /** Clients must give this token (`nats://TOKEN@…`). */
  token?: string;
  /** Clients must give this user and password (`nats://USER:PASS@…`). */
  user?: { name: string; password: string };
  /** The largest message the server takes (nats-server's default is 1 MiB). */
  maxPayload?: number;
  /**
   * Decentralised auth: an operator, an account preloaded into the server, and users whose
   * creds files are written next to the config (`creds`: one the server trusts, `untrusted`: a
   * user of an account the server does not know).
   */
  operator?: boolean;
}

/** JWTs as nats-server reads them: header.claims.signature, signed with the issuer's NKey. */
function jwt(issuer: KeyPair, subject: string, nats: Record<string, unknown>): string {
  const b64 = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");
  const header = b64(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const claims = {
    jti: randomUUID().replaceAll("-", "").toUpperCase(),
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name: subject.slice(0, 8),
    sub: subject,
    nats: { ...nats, version: 2 },
  };
  const body = `${header}.${b64(JSON.stringify(claims))}`;
  return `${body}.${b64(issuer.sign(new TextEncoder().encode(body)))}`;
}

const UNLIMITED = { subs: -1, data: -1, payload: -1 };

function credsFile(userJwt: string, user: KeyPair): string {
  return `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(user.getSeed())}\n------END USER NKEY SEED------\n`;
}

/** Writes an operator's JWT and two creds files to `folder`; returns the server's config lines. */
function operatorSetup(folder: string): string {
  const operator = createOperator();
  const account = createAccount();
  const stranger = createAccount();
  writeFileSync(
    join(folder, "operator.jwt"),
    jwt(operator, operator.getPublicKey(), { type: "operator" }),
  );
  const accountJwt = jwt(operator, account.getPublicKey(), {
    type: "account",
    limits: { ...UNLIMITED, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} },
  });
  for (const [name, issuer] of [
    ["creds", account],
    ["untrusted", stranger],
  ] as const) {
    const user = createUser();
    const userJwt = jwt(issuer, user.getPublicKey(), {
      type: "user",
      pub: {},
      sub: {},
      ...UNLIMITED,
    });
    writeFileSync(join(folder, `${name}.creds`), credsFile(userJwt, user), { mode: 0o600 });
  }
  return [
    `operator: ${join(folder, "operator.jwt")}`,
    "resolver: MEMORY",
    `resolver_preload: { ${account.getPublicKey()}: "${accountJwt}" }`,
  ].join("\n");
}

export interface NatsServer {
  readonly port: number;
  /** `nats://127.0.0.1:PORT`, without credentials. */
  readonly url: string;
  readonly pid: number;
  /** SIGKILL, as a crash; resolves once it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same ports with the same config. */
  restart(): Promise<void>;
  /** What it logged, for messages when a test fails. */
  log(): string;
}

/** Started servers; with `operator`, the creds files of a trusted user and of a stranger. */
export type NatsServers = NatsServer[] & {
  stop(): Promise<void>;
  creds: { trusted: string; untrusted: string };
};

interface Node {
  name: string;
  port: number;
  clusterPort?: number;
  monitorPort: number;
}

class ServerProcess implements NatsServer {
  readonly port: number;
  readonly url: string;
  readonly #config: string;
  readonly #monitorPort: number;
  #child: ChildProcess | undefined;
  #log = "";

  constructor(node: Node, config: string) {
    this.port = node.port;
    this.url = `nats://127.0.0.1:${node.port}`;
    this.#monitorPort = node.monitorPort;
    this.#config = config;
  }

  get pid(): number {
    return this.#child?.pid as number;
  }

  async start(): Promise<void> {
    const child = spawn("nats-server", ["-c", this.#config], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.#child = child;
    const reap = () => child.kill("SIGKILL");
    process.once("exit", reap);
    child.once("exit", () => process.off("exit", reap));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      this.#log = (this.#log + d).slice(-16 * 1024);
    });
    await until(`nats-server on port ${this.port} to be ready (${this.#log})`, async () => {
      if (child.exitCode !== null) throw new Error(`nats-server exited: ${this.#log}`);
      return (await this.monitor("healthz")) === undefined ? undefined : true;
    });
  }

  /** A monitoring endpoint's JSON, or undefined while the server does not answer. */
  async monitor(path: string): Promise<Record<string, unknown> | undefined> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.#monitorPort}/${path}`);
      if (!res.ok) return undefined;
      return (await res.json()) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }

  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGKILL");
    await gone;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  log(): string {
    return this.#log;
  }
}

function authConfig(options: NatsServerOptions): string {
  if (options.token !== undefined)
    return `authorization { token: ${JSON.stringify(options.token)} }`;
  if (options.user !== undefined) {
    return `authorization { user: ${JSON.stringify(options.user.name)}, password: ${JSON.stringify(options.user.password)} }`;
  }
  return "";
}

/** Tries at starting servers whose free ports another process took first. */
const PORT_RACE_TRIES = 5;

/**
 * Starts `count` nats-servers (routed into one cluster when more than one). The ports are free
 * when picked, but other tests run at once and may bind one before nats-server does: then it is
 * all tried again on new ports.
 */
export async function startNatsServers(
  count: number,
  options: NatsServerOptions = {},
): Promise<NatsServers> {
  for (let tries = 1; ; tries++) {
    try {
      return await startNatsServersOnce(count, options);
    } catch (err) {
      const raced = /address already in use/.test(String((err as Error).message));
      if (!raced || tries >= PORT_RACE_TRIES) throw err;
    }
  }
}

async function startNatsServersOnce(
  count: number,
  options: NatsServerOptions,
): Promise<NatsServers> {
  const folder = mkdtempSync(join(tmpdir(), "guestlink-nats-"));
  const auth = options.operator ? operatorSetup(folder) : authConfig(options);
  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
    nodes.push({
      name: `n${i + 1}`,
      port: await freePort(),
      monitorPort: await freePort(),
      ...(count > 1 ? { clusterPort: await freePort() } : {}),
    });
  }
  const servers = nodes.map((node) => {
    const routes = nodes
      .filter((n) => n !== node)
      .map((n) => `nats-route://127.0.0.1:${n.clusterPort}`);
    const config = [
      `server_name: ${node.name}`,
      `listen: 127.0.0.1:${node.port}`,
      `http: 127.0.0.1:${node.monitorPort}`,
      options.maxPayload === undefined ? "" : `max_payload: ${options.maxPayload}`,
      auth,
      node.clusterPort === undefined
        ? ""
        : `cluster { name: guestlink-test, listen: 127.0.0.1:${node.clusterPort}, routes: [${routes.join(", ")}] }`,
    ].join("\n");
    const file = join(folder, `${node.name}.conf`);
    writeFileSync(file, `${config}\n`);
    return new ServerProcess(node, file);
  });
  const started: ServerProcess[] = [];
  const stop = async () => {
    await Promise.all(started.map((s) => s.kill()));
    rmSync(folder, { recursive: true, force: true });
  };
  try {
    for (const s of servers) {
      await s.start();
      started.push(s);
    }
    if (count > 1) {
      // Routed: every server has a route to each of the others.
      await until("the NATS cluster's routes", async () => {
        for (const s of servers) {
          const routez = await s.monitor("routez");
          if (((routez?.num_routes as number | undefined) ?? 0) < count - 1) return undefined;
        }
        return true;
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return Object.assign([...servers] as NatsServer[], {
    stop,
    creds: { trusted: join(folder, "creds.creds"), untrusted: join(folder, "untrusted.creds") },
  });
}
