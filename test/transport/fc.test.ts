/**
 * `fc:UDS_PATH:PORT` against an emulator of Firecracker's documented host-side vsock handshake
 * (test/helpers/fc-emulator.ts): there is no Firecracker here. The "guest" serves its ports on
 * Unix sockets in a temporary folder.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { runAgent } from "../../src/agent/run.ts";
import { openSession, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { connectFc, FC_MAX_ANSWER_BYTES, listenFc } from "../../src/transport/fc.ts";
import { connect, listen } from "../../src/transport/index.ts";
import { NodeStreamTransport } from "../../src/transport/node-stream.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { FcEmulator } from "../helpers/fc-emulator.ts";
import {
  accept,
  echo,
  pattern,
  readAll,
  rejectsWith,
  sendAll,
  sha256,
  tempDir,
} from "../helpers/transport.ts";

const silent = { info() {}, warn() {} };

/** A guest program listening on its vsock port, here a Unix socket; each connection goes to `serve`. */
async function guestListener(
  path: string,
  serve: (t: Transport, socket: net.Socket) => void,
): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) =>
    serve(new NodeStreamTransport(socket, socket, { description: `guest:${path}` }), socket),
  );
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe("fc: Firecracker's host-side vsock (against an emulator)", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let n = 0;
  let emulator: FcEmulator | undefined;
  const servers: net.Server[] = [];
  /** A fresh uds_path and guest socket path for one test. */
  const paths = () => {
    n++;
    return { uds: join(dir.path, `v${n}.sock`), guest: join(dir.path, `g${n}.sock`) };
  };

  before(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await emulator?.close();
    emulator = undefined;
    await Promise.all(servers.splice(0).map(closeServer));
  });
  after(async () => {
    await dir.remove();
  });

  it("connects to a guest port and carries bytes both ways, byte-exact, half-close included", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]] });
    servers.push(await guestListener(guest, (t) => void echo(t)));

    const transport = await connect(`fc:${uds}:52`);
    assert.equal(transport.description, `fc:${uds}:52`);
    const data = pattern(3 * 1024 * 1024 + 17, 5);
    const [back] = await Promise.all([
      readAll(transport),
      sendAll(transport, data).then(() => transport.close()),
    ]);
    assert.equal(back.length, data.length);
    assert.equal(sha256(back), sha256(data));
    assert.equal(emulator.connected, 1);
  });

  it("keeps the bytes the guest sent at once, which arrive in the same chunk as OK", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]], coalesceOk: true });
    const greeting = pattern(3000, 8);
    servers.push(
      await guestListener(guest, (t) => {
        t.send([greeting]);
        void t.close();
      }),
    );
    const transport = await connectFc(uds, 52);
    const received = await readAll(transport);
    assert.equal(sha256(received), sha256(greeting));
    await transport.close();
  });

  it("asks again until the guest listens: Firecracker closes the connection until then", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[1024, guest]] });
    const later = emulator.refusals(3).then(async () => {
      servers.push(await guestListener(guest, (t) => void echo(t)));
    });
    const transport = await connectFc(uds, 1024, { deadline: performance.now() + 30_000 });
    await later;
    assert.ok(emulator.refused >= 3);
    const data = pattern(10_000, 2);
    const [back] = await Promise.all([
      readAll(transport),
      sendAll(transport, data).then(() => transport.close()),
    ]);
    assert.equal(sha256(back), sha256(data));
  });

  it("gives up at the deadline with CONNECT_FAILED saying nothing listens on the guest port", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]] });
    const err = await rejectsWith(
      connectFc(uds, 52, { deadline: performance.now() + 200 }),
      "CONNECT_FAILED",
      /nothing listens on guest port 52 behind fc:.*: Firecracker closed the connection \d+ times? in .* s; is the agent running in the guest \(guestlink agent --listen vsock:4294967295:52\)\?/,
    );
    assert.equal((err as { details?: { reason?: string } }).details?.reason, "deadline");
    assert.ok(emulator.refused >= 1);
  });

  it("stops asking when the signal aborts, and rejects with its reason", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]] });
    const controller = new AbortController();
    const reason = new Error("the user gave up");
    void emulator.refusals(2).then(() => controller.abort(reason));
    await assert.rejects(connectFc(uds, 52, { signal: controller.signal }), (e) => e === reason);
  });

  it("does not even connect with a signal already aborted or a deadline already past", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]] });
    const reason = new Error("before it began");
    await assert.rejects(
      connectFc(uds, 52, { signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
    await rejectsWith(
      connectFc(uds, 52, { deadline: performance.now() - 1 }),
      "CONNECT_FAILED",
      /did not finish before the deadline/,
    );
    assert.equal(emulator.refused + emulator.connected + emulator.malformed, 0);
  });

  it("fails at once when there is no Firecracker socket at the path", async () => {
    await rejectsWith(
      connectFc(join(dir.path, "missing.sock"), 52),
      "CONNECT_FAILED",
      /no Firecracker vsock socket at .*missing\.sock \(ENOENT\).*uds_path/,
    );
  });

  for (const [what, reply, message] of [
    [
      "an HTTP answer (Firecracker's API socket)",
      "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
      /answered CONNECT 52 with "HTTP\/1\.1 400 Bad Request\\r\\n", not "OK <port>": is the path Firecracker's vsock socket/,
    ],
    ["OK without a number", "OK \n", /answered CONNECT 52 with "OK \\n", not "OK <port>"/],
    ["a number that is not one", "OK 12ab\n", /answered CONNECT 52 with "OK 12ab\\n"/],
    ["half an answer, then the end", "OK 10737", /answered CONNECT 52 with "OK 10737" and closed/],
    [
      "a flood with no newline",
      "x".repeat(FC_MAX_ANSWER_BYTES + 100),
      new RegExp(`answered CONNECT 52 with "x{${FC_MAX_ANSWER_BYTES}}"…, not "OK <port>"`),
    ],
  ] as const) {
    it(`fails with CONNECT_FAILED quoting ${what}`, async () => {
      const { uds } = paths();
      emulator = await FcEmulator.start({ udsPath: uds, reply });
      await rejectsWith(connectFc(uds, 52), "CONNECT_FAILED", message);
    });
  }

  it("listens on UDS_PATH_PORT for the guest's connections to the host", async () => {
    const { uds } = paths();
    emulator = await FcEmulator.start({ udsPath: uds });
    const listener = await listen(`fc:${uds}:1234`);
    assert.equal(listener.address, `fc:${uds}:1234`);
    assert.ok(existsSync(`${uds}_1234`));
    const guestSide = await emulator.guestConnect(1234);
    const host = await accept(listener);
    assert.equal(host.description, `fc:${uds}:1234`);

    const guest = new NodeStreamTransport(guestSide, guestSide, { description: "guest" });
    const up = pattern(2 * 1024 * 1024, 3);
    const down = pattern(1024 * 1024 + 5, 4);
    const [atHost, atGuest] = await Promise.all([
      readAll(host),
      readAll(guest),
      sendAll(guest, up).then(() => guest.close()),
      sendAll(host, down).then(() => host.close()),
    ]);
    assert.equal(sha256(atHost), sha256(up));
    assert.equal(sha256(atGuest), sha256(down));
    await listener.close();
    assert.equal(existsSync(`${uds}_1234`), false);
  });

  it("listenFc honours an aborted signal", async () => {
    const { uds } = paths();
    const reason = new Error("no");
    await assert.rejects(
      listenFc(uds, 9, { signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
  });

  it("runs a whole session to an agent behind Firecracker's socket: calls and info", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds, guest: [[52, guest]] });
    // The agent in the guest would listen on vsock:4294967295:52; here its port is a Unix socket.
    const agent = await runAgent({
      agent: new Agent({ id: "fc-guest" }),
      listen: [`unix:${guest}`],
      log: silent,
    });
    try {
      const session = await openSession(`fc:${uds}:52`);
      assert.equal(session.peer?.id, "fc-guest");
      assert.deepEqual(await session.call("ping", { n: 1 }), { n: 1 });
      const info = (await session.call("info")) as { agent: { pid: number }; services: string[] };
      assert.equal(info.agent.pid, process.pid);
      assert.ok(info.services.includes("exec"));
      await session.close();
    } finally {
      await agent.stop();
    }
  });

  it("runs a session the other way: the agent dials the host, which listens on fc:", async () => {
    const { uds, guest } = paths();
    emulator = await FcEmulator.start({ udsPath: uds });
    // `guestlink agent --connect vsock:2:1025` in the guest; here the guest dials a Unix socket
    // that the emulator forwards to UDS_PATH_1025.
    await emulator.forwardGuestConnections(1025, guest);
    let arrived!: (s: Session) => void;
    const session = new Promise<Session>((resolve) => {
      arrived = resolve;
    });
    const host = await serveSessions(`fc:${uds}:1025`, (s) => arrived(s), { role: "client" });
    const agent = await runAgent({
      agent: new Agent({ id: "dialer" }),
      connect: `unix:${guest}`,
      reconnectDelayMs: 20,
      log: silent,
    });
    try {
      const s = await session;
      await s.ready;
      assert.equal(s.peer?.id, "dialer");
      assert.ok(await s.call("info"));
    } finally {
      await agent.stop({ abort: true });
      await host.close({ abort: true });
    }
  });
});
