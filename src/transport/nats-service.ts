/**
 * Discovery of agents on NATS through the NATS service protocol (the "micro" protocol of
 * `nats micro ls` and @nats-io/services): every agent listening on `nats:` answers `$SRV.PING`,
 * `$SRV.INFO` and `$SRV.STATS` (each also with `.guestlink` and `.guestlink.ID` after it) as an
 * instance of the service `guestlink` whose instance id is its agent id. So `nats micro ls` lists
 * agents too, and `guestlink ls --nats`, `serve --discover nats://…` and plans find them.
 *
 * The protocol is three subjects answered with JSON; it is written out here rather than taken from
 * @nats-io/services, whose service object also wants to own the endpoints' subscriptions and
 * error replies (ours is the open request of nats.ts, answered there), and which would be one
 * more package for the agent to load.
 */
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { VERSION } from "../version.ts";
import { formatAddress } from "./address.ts";
import { NATS_AGENT_ID, type NatsServers, natsDescription } from "./nats-address.ts";
import { connectNatsServer } from "./nats-connect.ts";

export const NATS_SERVICE_NAME = "guestlink";
const PING = "io.nats.micro.v1.ping_response";
const INFO = "io.nats.micro.v1.info_response";
const STATS = "io.nats.micro.v1.stats_response";

/** What an agent says of itself besides its id (string values, as the protocol has them). */
export type NatsServiceMetadata = Record<string, string>;

export interface NatsServiceEndpoint {
  readonly subject: string;
  /** Requests taken and refused so far. */
  requests(): { count: number; errors: number; lastError: string };
}

/**
 * Answers the service protocol on `nc` as agent `id`. Returns the function that stops answering.
 */
export function serveNatsService(
  nc: NatsConnection,
  id: string,
  metadata: () => NatsServiceMetadata,
  endpoint: NatsServiceEndpoint,
): () => Promise<void> {
  const started = new Date().toISOString();
  const base = { name: NATS_SERVICE_NAME, id, version: VERSION };
  const endpoints = () => [
    { name: "open", subject: endpoint.subject, queue_group: "", metadata: null },
  ];
  const answers: Record<string, () => object> = {
    PING: () => ({ type: PING, ...base, metadata: metadata() }),
    INFO: () => ({
      type: INFO,
      ...base,
      description: "a guestlink agent: dial it as nats://SERVERS/ID",
      metadata: metadata(),
      endpoints: endpoints(),
    }),
    STATS: () => {
      const r = endpoint.requests();
      return {
        type: STATS,
        ...base,
        metadata: metadata(),
        started,
        endpoints: [
          {
            ...endpoints()[0],
            num_requests: r.count,
            num_errors: r.errors,
            last_error: r.lastError,
            processing_time: 0,
            average_processing_time: 0,
          },
        ],
      };
    },
  };
  const subs: Subscription[] = [];
  for (const [verb, answer] of Object.entries(answers)) {
    for (const subject of [
      `$SRV.${verb}`,
      `$SRV.${verb}.${NATS_SERVICE_NAME}`,
      `$SRV.${verb}.${NATS_SERVICE_NAME}.${id}`,
    ]) {
      subs.push(
        nc.subscribe(subject, {
          callback: (err, msg: Msg) => {
            if (err === null) msg.respond(JSON.stringify(answer()));
          },
        }),
      );
    }
  }
  return async () => {
    for (const s of subs) s.unsubscribe();
  };
}

/** An agent found on NATS. */
export interface NatsAgent {
  readonly id: string;
  /** The address to dial it by, with the credentials the servers were given. */
  readonly address: string;
  /** The address without credentials, to show. */
  readonly description: string;
  readonly version: string;
  readonly metadata: NatsServiceMetadata;
}

/** `*` matches any run of characters; everything else itself. */
export function idMatcher(pattern: string): (id: string) => boolean {
  const re = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*")}$`);
  return (id) => re.test(id);
}

/** How long `findNatsAgents` collects answers: agents in a cluster answer within this. */
export const NATS_DISCOVERY_WAIT_MS = 1_000;

/** Asks every agent on `nc`'s servers who it is; resolves with the answers in `waitMs`. */
export async function pingAgents(
  nc: NatsConnection,
  servers: NatsServers,
  waitMs: number,
): Promise<NatsAgent[]> {
  const found = new Map<string, NatsAgent>();
  const inbox = `_INBOX.guestlink.${Math.random().toString(36).slice(2)}${Date.now()}`;
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err !== null) return;
      let answer: {
        type?: unknown;
        name?: unknown;
        id?: unknown;
        version?: unknown;
        metadata?: unknown;
      };
      try {
        answer = JSON.parse(new TextDecoder().decode(msg.data));
      } catch {
        return;
      }
      if (answer.type !== INFO || answer.name !== NATS_SERVICE_NAME) return;
      const id = answer.id;
      if (typeof id !== "string" || !NATS_AGENT_ID.test(id)) return;
      const metadata: NatsServiceMetadata = {};
      if (typeof answer.metadata === "object" && answer.metadata !== null) {
        for (const [k, v] of Object.entries(answer.metadata)) {
          if (typeof v === "string") metadata[k] = v;
        }
      }
      found.set(id, {
        id,
        address: formatAddress({ kind: "nats", ...servers, agent: id }),
        description: natsDescription(servers, id),
        version: typeof answer.version === "string" ? answer.version : "",
        metadata,
      });
    },
  });
  nc.publish(`$SRV.INFO.${NATS_SERVICE_NAME}`, new Uint8Array(0), { reply: inbox });
  await nc.flush();
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  sub.unsubscribe();
  return [...found.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Lists the agents on NATS (whose id matches `match`, if given). */
export async function findNatsAgents(
  servers: NatsServers,
  options: { creds?: string; match?: string; waitMs?: number } = {},
): Promise<NatsAgent[]> {
  const nc = await connectNatsServer(servers, options.creds, `guestlink ls ${process.pid}`, {
    maxReconnectAttempts: 0,
  });
  try {
    const agents = await pingAgents(nc, servers, options.waitMs ?? NATS_DISCOVERY_WAIT_MS);
    const matches = options.match === undefined ? () => true : idMatcher(options.match);
    return agents.filter((a) => matches(a.id));
  } finally {
    await nc.close().catch(() => {});
  }
}

export interface NatsDiscoveryEvents {
  found(agent: NatsAgent): void | Promise<void>;
  lost(agent: NatsAgent): void;
}

/**
 * Agents on NATS found live: asks every `pollMs` and reports each new agent once, and once again
 * when it has not answered twice in a row.
 */
export class NatsDiscovery {
  readonly servers: NatsServers;
  readonly #events: NatsDiscoveryEvents;
  readonly #options: { creds?: string; match?: string; pollMs: number; waitMs: number };
  readonly #known = new Map<string, { agent: NatsAgent; missed: number }>();
  #nc: NatsConnection | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #poll: Promise<void> = Promise.resolve();

  constructor(
    servers: NatsServers,
    events: NatsDiscoveryEvents,
    options: { creds?: string; match?: string; pollMs?: number; waitMs?: number } = {},
  ) {
    this.servers = servers;
    this.#events = events;
    this.#options = {
      ...options,
      pollMs: options.pollMs ?? 2_000,
      waitMs: options.waitMs ?? NATS_DISCOVERY_WAIT_MS,
    };
  }

  /** What is known now. */
  get agents(): NatsAgent[] {
    return [...this.#known.values()].map((k) => k.agent);
  }

  /** Connects and asks once; resolves after the first answers are in. */
  async start(): Promise<void> {
    this.#nc = await connectNatsServer(
      this.servers,
      this.#options.creds,
      `guestlink discovery ${process.pid}`,
    );
    this.#poll = this.#ask();
    await this.#poll;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#poll.catch(() => {});
    await this.#nc?.close().catch(() => {});
  }

  async #ask(): Promise<void> {
    const nc = this.#nc as NatsConnection;
    const matches = this.#options.match === undefined ? () => true : idMatcher(this.#options.match);
    try {
      const answered = (await pingAgents(nc, this.servers, this.#options.waitMs)).filter((a) =>
        matches(a.id),
      );
      const seen = new Set(answered.map((a) => a.id));
      for (const agent of answered) {
        const known = this.#known.get(agent.id);
        if (known !== undefined) {
          known.missed = 0;
          known.agent = agent;
          continue;
        }
        this.#known.set(agent.id, { agent, missed: 0 });
        if (!this.#stopped) await this.#events.found(agent);
      }
      for (const [id, known] of this.#known) {
        if (seen.has(id)) continue;
        known.missed++;
        if (known.missed >= 2) {
          this.#known.delete(id);
          if (!this.#stopped) this.#events.lost(known.agent);
        }
      }
    } catch {
      // The NATS connection is down: it reconnects by itself, and the next round asks again.
    }
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#poll = this.#ask();
    }, this.#options.pollMs);
    this.#timer.unref();
  }
}
