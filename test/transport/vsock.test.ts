/**
 * `vsock:CID:PORT` and its addon. What runs depends on the machine, probed without sending
 * anything: a vsock connect to a CID this kernel cannot loop back goes out to the hypervisor, so
 * the tests connect only over vsock_loopback (CID 1), when the kernel has it, and otherwise only
 * bind and listen (which stay on this machine). Accepting through libuv's pipe handle, the path
 * vsock listeners take, is also tested on a Unix socket descriptor, which needs no vsock at all.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Agent } from "../../src/agent/agent.ts";
import { runAgent } from "../../src/agent/run.ts";
import { openSession } from "../../src/platform/session.ts";
import { connect, listen } from "../../src/transport/index.ts";
import {
  connectVsock,
  listenVsock,
  VMADDR_CID_ANY,
  VMADDR_CID_LOCAL,
  VMADDR_PORT_ANY,
  VSOCK_CONNECT_TIMEOUT_MS,
} from "../../src/transport/vsock.ts";
import {
  loadVsockAddon,
  VSOCK_ADDON_ENV,
  type VsockAddon,
  vsockAddonCandidates,
} from "../../src/transport/vsock-addon.ts";
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

const linux = process.platform === "linux";
const FAKE_ADDON = fileURLToPath(new URL("../fixtures/fake-vsock-addon.cjs", import.meta.url));
const FD_SERVER_ECHO = fileURLToPath(new URL("../fixtures/fd-server-echo.ts", import.meta.url));
const silent = { info() {}, warn() {} };

/** What this machine has: AF_VSOCK at all, and the loopback transport (CID 1). */
function probe(addon: VsockAddon | undefined): { vsock: boolean; loopback: boolean } {
  if (addon === undefined) return { vsock: false, loopback: false };
  const tryListen = (cid: number): string => {
    try {
      closeSync(addon.listen(cid, VMADDR_PORT_ANY, 1));
      return "ok";
    } catch (err) {
      return (err as { code?: string }).code ?? String(err);
    }
  };
  const any = tryListen(VMADDR_CID_ANY);
  return { vsock: any === "ok", loopback: any === "ok" && tryListen(VMADDR_CID_LOCAL) === "ok" };
}

/** Runs `fn` with GUESTLINK_VSOCK_ADDON set to `value`. */
async function withAddonEnv<T>(value: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env[VSOCK_ADDON_ENV];
  process.env[VSOCK_ADDON_ENV] = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[VSOCK_ADDON_ENV];
    else process.env[VSOCK_ADDON_ENV] = before;
  }
}

let addon: VsockAddon | undefined;
try {
  addon = linux ? loadVsockAddon("vsock:test") : undefined;
} catch {
  addon = undefined;
}
const here = probe(addon);

describe("vsock addon", { skip: !linux && "AF_VSOCK is Linux only" }, () => {
  it("is built and loads, with what the transport needs", () => {
    assert.ok(
      addon !== undefined,
      `the addon is not built (looked in ${vsockAddonCandidates().join(", ")}): run node scripts/build-native.mjs`,
    );
    for (const name of ["listen", "connect", "cancel", "address", "localCid"] as const) {
      assert.equal(typeof addon[name], "function", name);
    }
  });

  it("reports errors as Node does: code, negative errno, syscall", { skip: !here.vsock }, () => {
    const fd = (addon as VsockAddon).listen(VMADDR_CID_ANY, VMADDR_PORT_ANY, 1);
    try {
      const [, port] = (addon as VsockAddon).address(fd, 0);
      assert.throws(
        () => (addon as VsockAddon).listen(VMADDR_CID_ANY, port, 1),
        (e: unknown) => {
          const err = e as { code?: string; errno?: number; syscall?: string; message: string };
          return (
            err.code === "EADDRINUSE" &&
            err.errno === -98 &&
            err.syscall === "bind" &&
            /^bind EADDRINUSE: /.test(err.message)
          );
        },
      );
    } finally {
      closeSync(fd);
    }
  });

  it("fails with TRANSPORT_UNSUPPORTED, saying how to build it, when it is missing", async () => {
    const missing = join("/nonexistent", "guestlink_vsock.node");
    await withAddonEnv(missing, async () => {
      const message = new RegExp(
        `needs guestlink's vsock addon \\(guestlink_vsock\\.node\\), which is not built: looked in ${missing}\\. Build it with \`npm rebuild guestlink\``,
      );
      await rejectsWith(connect("vsock:2:1024"), "TRANSPORT_UNSUPPORTED", message);
      await rejectsWith(listen("vsock:4294967295:1024"), "TRANSPORT_UNSUPPORTED", message);
    });
  });

  it("fails with TRANSPORT_UNSUPPORTED when the file there is not a loadable addon", async () => {
    const dir = await tempDir();
    try {
      const broken = join(dir.path, "broken.node");
      writeFileSync(broken, "not an ELF file");
      await withAddonEnv(broken, () =>
        rejectsWith(
          listen("vsock:4294967295:1024"),
          "TRANSPORT_UNSUPPORTED",
          /broken\.node cannot be loaded \(.*\): rebuild it for this machine and Node/,
        ),
      );
    } finally {
      await dir.remove();
    }
  });
});

describe("vsock transport", { skip: !linux && "AF_VSOCK is Linux only" }, () => {
  it("refuses to connect to any CID or any port, which only listeners can use", async () => {
    await rejectsWith(connect("vsock:4294967295:52"), "INVALID_ADDRESS", /any CID/);
    await rejectsWith(connect("vsock:2:4294967295"), "INVALID_ADDRESS", /any port/);
  });

  it("does not start with a signal already aborted or a deadline already past", async () => {
    const reason = new Error("not now");
    await assert.rejects(
      connectVsock(2, 52, { signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
    await rejectsWith(
      connectVsock(2, 52, { deadline: performance.now() - 1 }),
      "CONNECT_FAILED",
      /did not finish before the deadline/,
    );
    await assert.rejects(
      listenVsock(VMADDR_CID_ANY, 52, { signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
  });

  it("says what is missing when this kernel has no AF_VSOCK", { skip: here.vsock }, async () => {
    if (addon === undefined) return;
    await rejectsWith(
      listen("vsock:4294967295:1024"),
      "TRANSPORT_UNSUPPORTED",
      /this kernel has no AF_VSOCK \(EAFNOSUPPORT\).*vmw_vsock_virtio_transport.*serial: or tcp:/,
    );
  });

  describe("listening", { skip: !here.vsock && "no AF_VSOCK here" }, () => {
    it("listens on any CID, reports the port the kernel picked, and frees it on close", async () => {
      const listener = await listen("vsock:4294967295:4294967295");
      const match = /^vsock:4294967295:(\d+)$/.exec(listener.address);
      assert.ok(match, listener.address);
      const port = Number(match[1]);
      assert.notEqual(port, VMADDR_PORT_ANY);
      await rejectsWith(
        listenVsock(VMADDR_CID_ANY, port),
        "ADDRESS_IN_USE",
        new RegExp(`vsock port ${port} is taken on this machine \\(EADDRINUSE\\)`),
      );
      await listener.close();
      const again = await listenVsock(VMADDR_CID_ANY, port);
      assert.equal(again.address, `vsock:4294967295:${port}`);
      await again.close();
    });

    it("ends the accept loop when closed", async () => {
      const listener = await listenVsock(VMADDR_CID_ANY, VMADDR_PORT_ANY);
      const next = listener[Symbol.asyncIterator]().next();
      await listener.close();
      assert.equal((await next).done, true);
    });

    it("refuses a CID that is not this machine's, naming the one it has", async () => {
      const local = (addon as VsockAddon).localCid();
      const other = local === 0xfffffff0 ? 0xfffffff1 : 0xfffffff0;
      await rejectsWith(
        listenVsock(other, VMADDR_PORT_ANY),
        "LISTEN_FAILED",
        new RegExp(
          `CID ${other} is not an address of this machine( \\(this machine is CID ${local}\\))? \\(EADDRNOTAVAIL\\): listen on vsock:4294967295:`,
        ),
      );
    });

    it("says that CID 1 needs vsock_loopback when the kernel lacks it", {
      skip: here.loopback && "this kernel has vsock_loopback",
    }, async () => {
      await rejectsWith(
        listenVsock(VMADDR_CID_LOCAL, VMADDR_PORT_ANY),
        "TRANSPORT_UNSUPPORTED",
        /this kernel has no vsock loopback \(EADDRNOTAVAIL\), which CID 1 needs: load vsock_loopback/,
      );
    });
  });

  describe("over vsock_loopback (CID 1)", {
    skip: !here.loopback && "no vsock_loopback here",
  }, () => {
    it("carries bytes both ways, byte-exact, and describes the peer", async () => {
      const listener = await listenVsock(VMADDR_CID_LOCAL, VMADDR_PORT_ANY);
      const port = Number(listener.address.split(":")[2]);
      const [client, server] = await Promise.all([connectVsock(1, port), accept(listener)]);
      assert.equal(client.description, `vsock:1:${port}`);
      assert.match(server.description, /^vsock:1:\d+$/);
      void echo(server);
      const data = pattern(4 * 1024 * 1024 + 3, 6);
      const [back] = await Promise.all([
        readAll(client),
        sendAll(client, data).then(() => client.close()),
      ]);
      assert.equal(sha256(back), sha256(data));
      await listener.close();
    });

    it("fails with CONNECT_FAILED when nothing listens on the port", async () => {
      const probeListener = await listenVsock(VMADDR_CID_LOCAL, VMADDR_PORT_ANY);
      const port = Number(probeListener.address.split(":")[2]);
      await probeListener.close();
      await rejectsWith(connectVsock(1, port), "CONNECT_FAILED", /nothing listens on port/);
    });

    it("runs a session to an agent listening on vsock", async () => {
      const agent = await runAgent({
        agent: new Agent({ id: "vsock-agent" }),
        listen: ["vsock:1:4294967295"],
        log: silent,
      });
      try {
        const session = await openSession(agent.addresses[0] as string);
        assert.equal(session.peer?.id, "vsock-agent");
        assert.ok(await session.call("info"));
        await session.close();
      } finally {
        await agent.stop();
      }
    });
  });
});

describe("vsock errors (with a stand-in addon that fails as planned)", {
  skip: !linux && "AF_VSOCK is Linux only",
}, () => {
  type Fake = { plan(p: Record<string, unknown>): void; calls: unknown[][] };
  const fake = createRequire(import.meta.url)(FAKE_ADDON) as Fake;
  const withFake = <T>(plan: Record<string, unknown>, fn: () => Promise<T>) => {
    fake.plan(plan);
    return withAddonEnv(FAKE_ADDON, fn);
  };

  it("says what is missing when the kernel has no AF_VSOCK, listening or connecting", () =>
    withFake({ listen: "EAFNOSUPPORT", connect: "EAFNOSUPPORT" }, async () => {
      const message =
        /this kernel has no AF_VSOCK \(EAFNOSUPPORT\), needed for vsock:.*: in a guest, load vsock and vmw_vsock_virtio_transport .*; on a host, load vhost_vsock; or use serial: or tcp:/;
      await rejectsWith(listen("vsock:4294967295:52"), "TRANSPORT_UNSUPPORTED", message);
      await rejectsWith(connect("vsock:2:52"), "TRANSPORT_UNSUPPORTED", message);
    }));

  it("tells a missing transport (ENODEV) from a missing peer", () =>
    withFake({ connect: "ENODEV" }, async () => {
      await rejectsWith(
        connectVsock(1, 52),
        "TRANSPORT_UNSUPPORTED",
        /no vsock loopback \(ENODEV\), which CID 1 needs: load vsock_loopback/,
      );
      await rejectsWith(
        connectVsock(2, 52),
        "TRANSPORT_UNSUPPORTED",
        /no vsock transport reaches CID 2 \(ENODEV\).*vmw_vsock_virtio_transport.*fc:UDS_PATH:PORT/,
      );
    }));

  it("fails with CONNECT_FAILED saying what to check when refused or unanswered", async () => {
    await withFake({ connect: "ECONNRESET" }, () =>
      rejectsWith(
        connectVsock(2, 52),
        "CONNECT_FAILED",
        /nothing listens on port 52 at CID 2 \(ECONNRESET\): is the agent running there \(guestlink agent --listen vsock:4294967295:52\)\?/,
      ),
    );
    await withFake({ connect: "ETIMEDOUT" }, () =>
      rejectsWith(
        connectVsock(7, 52),
        "CONNECT_FAILED",
        new RegExp(
          `no answer from vsock:7:52 within ${VSOCK_CONNECT_TIMEOUT_MS} ms \\(ETIMEDOUT\\): is a VM with CID 7 running`,
        ),
      ),
    );
  });

  it("gives the kernel the caller's remaining time, or a default without a deadline", () =>
    withFake({ connect: "ETIMEDOUT" }, async () => {
      await connectVsock(2, 52).catch(() => {});
      await connectVsock(2, 52, { deadline: performance.now() + 60_000 }).catch(() => {});
      const timeouts = fake.calls.map((c) => c[3] as number);
      assert.equal(timeouts[0], VSOCK_CONNECT_TIMEOUT_MS);
      assert.ok(
        (timeouts[1] as number) > 59_000 && (timeouts[1] as number) <= 60_000,
        `${timeouts[1]}`,
      );
    }));

  it("cancels the connect in flight when the signal aborts or the deadline passes", () =>
    withFake({ hang: true }, async () => {
      const controller = new AbortController();
      const reason = new Error("stop");
      const connecting = connectVsock(2, 52, { signal: controller.signal });
      controller.abort(reason);
      await assert.rejects(connecting, (e) => e === reason);
      await rejectsWith(
        connectVsock(2, 52, { deadline: performance.now() + 20 }),
        "CONNECT_FAILED",
        /connecting to vsock:2:52 did not finish before the deadline/,
      );
      assert.deepEqual(
        fake.calls.map((c) => c[0]),
        ["connect", "cancel", "connect", "cancel"],
      );
    }));

  it("maps listen failures: in use, not this machine's CID, privileged port", async () => {
    await withFake({ listen: "EADDRINUSE" }, () =>
      rejectsWith(listenVsock(VMADDR_CID_ANY, 52), "ADDRESS_IN_USE", /vsock port 52 is taken/),
    );
    await withFake({ listen: "EADDRNOTAVAIL" }, () =>
      rejectsWith(
        listenVsock(9, 52),
        "LISTEN_FAILED",
        /CID 9 is not an address of this machine \(this machine is CID 3\) \(EADDRNOTAVAIL\): listen on vsock:4294967295:52 for any CID/,
      ),
    );
    await withFake({ listen: "EACCES" }, () =>
      rejectsWith(
        listenVsock(VMADDR_CID_ANY, 52),
        "LISTEN_FAILED",
        /ports below 1024 need CAP_NET_BIND_SERVICE/,
      ),
    );
  });
});

describe("accepting on a listening descriptor (FdServer)", { skip: !linux && "Linux only" }, () => {
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await dir.remove();
  });

  it("accepts connections as net.Sockets through libuv's pipe handle, on a Unix socket descriptor", async () => {
    // Node gives no bare listening descriptor, so a child process inherits this server's: it
    // accepts through FdServer, and this process stops listening (the rename keeps the file,
    // which closing the server would remove).
    const first = join(dir.path, "fd.sock");
    const path = join(dir.path, "fd-moved.sock");
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(first, resolve));
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    const child = spawn(process.execPath, ["--import", "tsx", FD_SERVER_ECHO], {
      stdio: ["ignore", "inherit", "inherit", fd, "ipc"],
    });
    try {
      await once(child, "message");
      renameSync(first, path);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      assert.ok(existsSync(path));
      const rounds = await Promise.all(
        [1, 2, 3].map(async (seed) => {
          const transport = await connect(`unix:${path}`);
          const data = pattern(512 * 1024 + seed, seed);
          const [back] = await Promise.all([
            readAll(transport),
            sendAll(transport, data).then(() => transport.close()),
          ]);
          return sha256(back) === sha256(data);
        }),
      );
      assert.deepEqual(rounds, [true, true, true]);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, "exit");
        child.kill();
        await exited;
      }
    }
  });
});
