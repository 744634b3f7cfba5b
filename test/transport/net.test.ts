import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fsPromises, { lstat, rename, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, listen, NodeStreamTransport } from "../../src/transport/index.ts";
import type { Listener, Transport } from "../../src/transport/transport.ts";
import {
  accept,
  echo,
  pattern,
  readAll,
  rejectsWith,
  sendAll,
  sha256,
  tempDir,
  throwsWith,
} from "../helpers/transport.ts";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const TEN_MB = 10 * 1024 * 1024;

let dir: { path: string; remove: () => Promise<void> };
before(async () => {
  dir = await tempDir();
});
after(async () => {
  await dir.remove();
});

let socketCount = 0;
function socketPath(): string {
  socketCount++;
  return join(dir.path, `s${socketCount}.sock`);
}

type Kind = {
  name: string;
  listen(): Promise<Listener>;
};

const KINDS: Kind[] = [
  { name: "unix", listen: () => listen(`unix:${socketPath()}`) },
  { name: "tcp", listen: () => listen("tcp:127.0.0.1:0") },
];

/** A listener and one connection to it: [client, server]. */
async function connected(
  kind: Kind,
): Promise<{ listener: Listener; client: Transport; server: Transport }> {
  const listener = await kind.listen();
  const [client, server] = await Promise.all([connect(listener.address), accept(listener)]);
  return { listener, client, server };
}

for (const kind of KINDS) {
  describe(`${kind.name} transport`, () => {
    it("echoes 10 MB byte-exact in both directions", async () => {
      const { listener, client, server } = await connected(kind);
      const data = pattern(TEN_MB, 7);
      const [, received] = await Promise.all([
        echo(server),
        readAll(client),
        sendAll(client, data, 50_000, 3).then(() => client.close()),
      ]);
      assert.equal(received.length, data.length);
      assert.equal(sha256(received), sha256(data));
      await listener.close();
    });

    it("half-closes: the peer reads to the end, then still answers", async () => {
      const { listener, client, server } = await connected(kind);
      client.send([text("question, "), text("in two parts")]);
      const clientClosed = client.close();
      throwsWith(() => client.send([text("more")]), "TRANSPORT_CLOSED");
      const replyRead = readAll(client);

      assert.equal(str(await readAll(server)), "question, in two parts");
      server.send([text("the answer")]);
      await server.close();
      assert.equal(str(await replyRead), "the answer");
      await clientClosed;
      await listener.close();
    });

    it("surfaces a peer's abort as TRANSPORT_FAILED", async () => {
      const { listener, client, server } = await connected(kind);
      // Bytes in flight to the aborting side: a Unix socket can only report an abort as an
      // error when the aborting side drops unread bytes (it has no reset).
      client.send([pattern(4 * 1024 * 1024)]);
      await server[Symbol.asyncIterator]().next();
      server.abort(new Error("agent shutting down"));
      const err = await rejectsWith(readAll(client), "TRANSPORT_FAILED", /broke/);
      assert.ok(err.cause instanceof Error);
      await rejectsWith(client.drain(), "TRANSPORT_CLOSED");
      throwsWith(() => client.send([text("x")]), "TRANSPORT_CLOSED");
      await listener.close();
    });

    it("holds a fast writer back to what a slow reader has taken, plus bounded buffers", async () => {
      const { listener, client, server } = await connected(kind);
      const total = 64 * 1024 * 1024;
      const chunk = new Uint8Array(64 * 1024);
      let sent = 0;
      const writing = (async () => {
        while (sent < total) {
          sent += chunk.length;
          if (!client.send([chunk])) await client.drain();
        }
        await client.close();
      })();
      let read = 0;
      let maxAhead = 0;
      for await (const c of server) {
        read += c.length;
        maxAhead = Math.max(maxAhead, sent - read);
        // A slow reader: let everything else run before taking the next chunk.
        await new Promise((resolve) => setImmediate(resolve));
      }
      await server.close();
      await writing;
      assert.equal(read, total);
      // Without backpressure the writer would queue all 64 MiB at once; with it, only our read
      // queue, the kernel's socket buffers and the writable's buffer can be ahead of the reader.
      assert.ok(maxAhead < 24 * 1024 * 1024, `writer got ${maxAhead} bytes ahead of the reader`);
      await listener.close();
    });

    it("reads a dialled socket into shared buffers, side by side, and still holds a fast writer back", async () => {
      const { listener, client, server } = await connected(kind);
      const total = 32 * 1024 * 1024;
      const data = pattern(4 * 1024 * 1024, 3);
      let sent = 0;
      const writing = (async () => {
        while (sent < total) {
          sent += data.length;
          if (!server.send([data])) await server.drain();
        }
        await server.close();
      })();
      let read = 0;
      let maxAhead = 0;
      let adjacent = 0;
      let last: Uint8Array | undefined;
      const hash = createHash("sha256");
      for await (const c of client) {
        if (last?.buffer === c.buffer && last.byteOffset + last.length === c.byteOffset) adjacent++;
        last = c;
        hash.update(c);
        read += c.length;
        maxAhead = Math.max(maxAhead, sent - read);
        await new Promise((resolve) => setImmediate(resolve));
      }
      await client.close();
      await writing;
      assert.equal(read, total);
      const expected = createHash("sha256");
      for (let i = 0; i < total / data.length; i++) expected.update(data);
      assert.equal(hash.digest("hex"), expected.digest("hex"));
      // Reads follow each other in one buffer until it is full (what lets the frame decoder take
      // a payload spread over reads as one view).
      assert.ok(adjacent > 0, "no read followed the one before in its buffer");
      assert.ok(maxAhead < 24 * 1024 * 1024, `writer got ${maxAhead} bytes ahead of the reader`);
      await listener.close();
    });

    it("ends the accept loop when the listener closes", async () => {
      const listener = await kind.listen();
      const accepted: Transport[] = [];
      const loop = (async () => {
        for await (const t of listener) accepted.push(t);
      })();
      await listener.close();
      await loop;
      assert.equal(accepted.length, 0);
    });

    it("closes the listener when the accept loop is left early", async () => {
      const listener = await kind.listen();
      const connecting = connect(listener.address);
      const accepted: Transport[] = [];
      for await (const server of listener) {
        accepted.push(server);
        break;
      }
      assert.equal(accepted.length, 1);
      (await connecting).abort();
      accepted[0]?.abort();
      await rejectsWith(connect(listener.address), "CONNECT_FAILED");
    });

    it("rejects with the signal's reason when aborted while connecting", async () => {
      const listener = await kind.listen();
      const controller = new AbortController();
      const reason = new Error("user gave up");
      const attempt = connect(listener.address, { signal: controller.signal });
      controller.abort(reason);
      await assert.rejects(attempt, (err) => err === reason);

      const already = new AbortController();
      already.abort(reason);
      await assert.rejects(
        connect(listener.address, { signal: already.signal }),
        (err) => err === reason,
      );
      await listener.close();
    });

    it("fails with CONNECT_FAILED when the deadline has passed", async () => {
      const listener = await kind.listen();
      await rejectsWith(
        connect(listener.address, { deadline: performance.now() - 1 }),
        "CONNECT_FAILED",
        /deadline/,
      );
      await listener.close();
    });
  });
}

describe("closing a stream transport", () => {
  it("cuts a connection whose peer never closes its side, instead of waiting forever", {
    timeout: 20_000,
  }, async () => {
    const path = socketPath();
    // Half-open allowed: it reads what it is sent, and its side stays open after ours ends.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.resume();
      held.push(socket);
    });
    const held: net.Socket[] = [];
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      const socket = net.connect(path);
      await new Promise<void>((resolve) => socket.once("connect", resolve));
      const transport = new NodeStreamTransport(socket, socket, {
        description: "unix:test",
        closeTimeoutMs: 50,
      });
      transport.send([text("last words")]);
      // Our bytes left, so the close did its job: it resolves, and the socket is gone.
      await transport.close();
      assert.equal(socket.destroyed, true);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe("unix transport addresses", () => {
  it("fails with CONNECT_FAILED naming what to check when no socket exists", async () => {
    const path = join(dir.path, "nobody-here.sock");
    const err = await rejectsWith(
      connect(`unix:${path}`),
      "CONNECT_FAILED",
      /no socket at unix:.*nobody-here\.sock \(ENOENT\): is the agent running/,
    );
    assert.equal((err.cause as { code?: string }).code, "ENOENT");
  });

  it("replaces a stale socket file that nobody answers on", async () => {
    const path = await staleSocket();
    await rejectsWith(
      connect(`unix:${path}`),
      "CONNECT_FAILED",
      /no agent listening at unix:.* \(ECONNREFUSED\): is the agent running\?/,
    );
    const listener = await listen(`unix:${path}`);
    const [client, server] = await Promise.all([connect(`unix:${path}`), accept(listener)]);
    client.send([text("hello")]);
    const clientClosed = client.close();
    assert.equal(str(await readAll(server)), "hello");
    await server.close();
    await clientClosed;
    await listener.close();
  });

  it("refuses with ADDRESS_IN_USE when an agent is live on the socket, leaving it working", async () => {
    const path = socketPath();
    const live = await listen(`unix:${path}`);
    await rejectsWith(
      listen(`unix:${path}`),
      "ADDRESS_IN_USE",
      /another process is listening at unix:.*: stop it, or choose another path/,
    );
    const [client, server] = await Promise.all([connect(`unix:${path}`), accept(live)]);
    client.abort();
    server.abort();
    await live.close();
  });

  it("never removes a file that is not a socket", async () => {
    const path = join(dir.path, "precious.txt");
    await writeFile(path, "keep me");
    await rejectsWith(
      listen(`unix:${path}`),
      "ADDRESS_IN_USE",
      /is not a socket; guestlink will not remove it/,
    );
    assert.ok((await lstat(path)).isFile());
  });

  it("hands out a connection that arrives the instant the socket starts listening", {
    timeout: 10_000,
  }, async () => {
    // A client polling for the socket can connect before listen() has returned: that
    // connection must reach the listener, not sit unread on the server (it once did, for the
    // time of an lstat, and the client's HELLO then went unanswered until HANDSHAKE_TIMEOUT).
    const path = socketPath();
    const listen0 = net.Server.prototype.listen;
    let early: net.Socket | undefined;
    net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
      this.once("listening", () => {
        early = net.connect({ path });
        early.end("early");
      });
      return (listen0 as (...a: unknown[]) => net.Server).apply(this, args);
    } as typeof listen0;
    // And the listener's own look at its socket file is slow, as under load.
    const lstat0 = fsPromises.lstat;
    fsPromises.lstat = (async (...args: Parameters<typeof lstat0>) => {
      await new Promise((r) => setTimeout(r, 100));
      return await lstat0(...args);
    }) as typeof lstat0;
    syncBuiltinESMExports();
    let listener: Listener;
    try {
      listener = await listen(`unix:${path}`);
    } finally {
      net.Server.prototype.listen = listen0;
      fsPromises.lstat = lstat0;
      syncBuiltinESMExports();
    }
    const server = await accept(listener);
    assert.equal(str(await readAll(server)), "early");
    early?.destroy();
    await server.close();
    await listener.close();
  });

  it("removes its socket file when the listener closes", async () => {
    const path = socketPath();
    const listener = await listen(`unix:${path}`);
    assert.ok((await lstat(path)).isSocket());
    await listener.close();
    await assert.rejects(lstat(path), { code: "ENOENT" });
  });

  it("fails with LISTEN_FAILED when the folder does not exist", async () => {
    await rejectsWith(
      listen(`unix:${join(dir.path, "missing", "g.sock")}`),
      "LISTEN_FAILED",
      /the folder does not exist/,
    );
  });

  it("refuses a socket path longer than the system allows instead of truncating it", async () => {
    await rejectsWith(listen(`unix:/tmp/${"x".repeat(200)}`), "INVALID_ADDRESS", /shorter path/);
    await rejectsWith(connect(`unix:/tmp/${"x".repeat(200)}`), "INVALID_ADDRESS", /shorter path/);
  });
});

describe("tcp transport addresses", () => {
  it("reports the real port when listening on port 0", async () => {
    const listener = await listen("tcp:127.0.0.1:0");
    assert.match(listener.address, /^tcp:127\.0\.0\.1:[1-9]\d*$/);
    await listener.close();
  });

  it("fails with CONNECT_FAILED naming what to check when nobody listens", async () => {
    const listener = await listen("tcp:127.0.0.1:0");
    const address = listener.address;
    await listener.close();
    const err = await rejectsWith(
      connect(address),
      "CONNECT_FAILED",
      /no agent listening at tcp:127\.0\.0\.1:\d+ \(ECONNREFUSED\): is the agent running/,
    );
    assert.equal((err.cause as { code?: string }).code, "ECONNREFUSED");
  });

  it("fails with ADDRESS_IN_USE when the port is taken", async () => {
    const listener = await listen("tcp:127.0.0.1:0");
    await rejectsWith(listen(listener.address), "ADDRESS_IN_USE", /already in use/);
    await listener.close();
  });

  const hasIPv6Loopback = Object.values(networkInterfaces())
    .flat()
    .some((a) => a?.internal && a.address === "::1");
  it("listens and connects over IPv6 loopback", {
    skip: !hasIPv6Loopback && "no ::1 here",
  }, async () => {
    const listener = await listen("tcp:[::1]:0");
    assert.match(listener.address, /^tcp:\[::1\]:[1-9]\d*$/);
    const [client, server] = await Promise.all([connect(listener.address), accept(listener)]);
    client.send([text("over v6")]);
    const closed = client.close();
    assert.equal(str(await readAll(server)), "over v6");
    await server.close();
    await closed;
    await listener.close();
  });

  it("refuses to connect to port 0", async () => {
    await rejectsWith(
      connect("tcp:127.0.0.1:0"),
      "INVALID_ADDRESS",
      /only makes sense for listening/,
    );
  });

  it("describes each end by the address of its peer", async () => {
    const listener = await listen("tcp:127.0.0.1:0");
    const [client, server] = await Promise.all([connect(listener.address), accept(listener)]);
    assert.equal(client.description, listener.address);
    assert.match(server.description, /^tcp:127\.0\.0\.1:\d+$/);
    assert.notEqual(server.description, listener.address);
    client.abort();
    server.abort();
    await listener.close();
  });
});

/** A socket file with nobody behind it, as a crashed agent leaves. */
async function staleSocket(): Promise<string> {
  const live = socketPath();
  const stale = join(dir.path, `stale-${socketCount}.sock`);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(live, resolve));
  // The socket stays bound to the file under its new name; closing the server leaves it dead.
  await rename(live, stale);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok((await lstat(stale)).isSocket());
  return stale;
}
