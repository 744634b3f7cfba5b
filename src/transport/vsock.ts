/**
 * AF_VSOCK sockets (`vsock:CID:PORT`): a guest talking to its host (CID 2) or a host talking to
 * a guest by its CID, with no network in between. Node has no vsock sockets, so a small addon
 * (`native/vsock.c`) creates, binds, connects and listens on them and hands back descriptors;
 * every byte then goes through Node's event loop: connected sockets are wrapped by `fdSocket`,
 * listening ones accepted on by `FdServer`, both epoll-driven libuv pipe handles.
 *
 * Firecracker guests are reached from the host through `fc:UDS_PATH:PORT` instead: Firecracker
 * does not use the host kernel's vsock.
 */
import { closeSync, existsSync } from "node:fs";
import type net from "node:net";
import {
  AddressInUseError,
  ConnectFailedError,
  InvalidAddressError,
  ListenFailedError,
  TransportUnsupportedError,
} from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, remainingMs, throwIfDone } from "./call-options.ts";
import { FdServer, fdServerSupported } from "./fd-server.ts";
import { fdSocket, fdSocketSupported } from "./fd-socket.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import { NetListener } from "./socket.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";
import { loadVsockAddon, type VsockAddon } from "./vsock-addon.ts";

/** Any CID: listening on every CID this machine has (`VMADDR_CID_ANY`, -1U). */
export const VMADDR_CID_ANY = 0xffffffff;
/** The host, seen from a guest. */
export const VMADDR_CID_HOST = 2;
/** This machine, through the vsock_loopback transport. */
export const VMADDR_CID_LOCAL = 1;
/** Any port: the kernel picks one when listening (`VMADDR_PORT_ANY`, -1U). */
export const VMADDR_PORT_ANY = 0xffffffff;
/** How long a connect waits for the peer's answer when the caller gave no deadline. */
export const VSOCK_CONNECT_TIMEOUT_MS = 10_000;
/** Pending connections the kernel queues for a listener (as Node's default for net.Server). */
export const VSOCK_LISTEN_BACKLOG = 511;

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const AGENT_HINT = "guestlink agent --listen vsock:4294967295:PORT";

/** Connects to port `port` of the machine with CID `cid`. Fails with CONNECT_FAILED or TRANSPORT_UNSUPPORTED. */
export async function connectVsock(
  cid: number,
  port: number,
  options?: CallOptions,
): Promise<Transport> {
  const description = formatAddress({ kind: "vsock", cid, port });
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  if (cid === VMADDR_CID_ANY || port === VMADDR_PORT_ANY) {
    throw new InvalidAddressError(
      `cannot connect to ${description}: ${cid === VMADDR_CID_ANY ? "CID 4294967295 means any CID, which only a listener can use; name the peer (2 for the host, a VM's guest CID from the host)" : "port 4294967295 means any port, which only a listener can use; name the agent's port"}`,
      { details: { address: description } },
    );
  }
  const addon = usable(description);
  const left = remainingMs(options);
  const timeoutMs = Number.isFinite(left)
    ? Math.max(1, Math.min(MAX_TIMEOUT_MS, Math.ceil(left)))
    : VSOCK_CONNECT_TIMEOUT_MS;
  let request: object | undefined;
  const attempt = new Promise<number>((resolve, reject) => {
    const done = (err: Error | null, fd: number | undefined) => {
      if (err === null && fd !== undefined) resolve(fd);
      else reject(connectFailed(err ?? new Error("no descriptor"), cid, port, timeoutMs));
    };
    try {
      request = addon.connect(cid, port, timeoutMs, done);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  });
  const fd = await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => {
      if (request !== undefined) addon.cancel(request);
    },
    discard: (late) => closeSync(late),
  });
  let socket: net.Socket;
  try {
    socket = fdSocket(fd);
  } catch (err) {
    closeSync(fd);
    throw new ConnectFailedError(
      `connected to ${description}, but Node cannot poll the socket (${errorLabel(err)})`,
      { cause: err, details: { address: description } },
    );
  }
  return new NodeStreamTransport(socket, socket, { description, redialable: true });
}

/**
 * Listens on port `port` of CID `cid` (4294967295 for any CID this machine has, the usual
 * choice in a guest; port 4294967295 lets the kernel pick). The listener's address has the real
 * port; accepted connections are described by their peer (`vsock:2:1073741825`).
 */
export async function listenVsock(
  cid: number,
  port: number,
  options?: CallOptions,
): Promise<Listener> {
  const asked = formatAddress({ kind: "vsock", cid, port });
  throwIfDone(
    options,
    () =>
      new ListenFailedError(`listening on ${asked} did not finish before the deadline`, {
        details: { address: asked, reason: "deadline" },
      }),
  );
  const addon = usable(asked);
  let fd: number;
  try {
    fd = addon.listen(cid, port, VSOCK_LISTEN_BACKLOG);
  } catch (err) {
    throw listenFailed(err, addon, cid, port);
  }
  let address = asked;
  if (port === VMADDR_PORT_ANY) {
    try {
      address = formatAddress({ kind: "vsock", cid, port: addon.address(fd, 0)[1] });
    } catch (err) {
      closeSync(fd);
      throw new ListenFailedError(`cannot tell which port ${asked} got (${errorLabel(err)})`, {
        cause: err,
        details: { address: asked },
      });
    }
  }
  const peers = new WeakMap<net.Socket, string>();
  let server: FdServer;
  try {
    // From here the server owns the descriptor, also when it throws.
    server = new FdServer(fd, {
      backlog: VSOCK_LISTEN_BACKLOG,
      onAccepted: (socket, accepted) => peers.set(socket, describePeer(addon, accepted, address)),
    });
  } catch (err) {
    throw new ListenFailedError(`cannot accept connections on ${address} (${errorLabel(err)})`, {
      cause: err,
      details: { address },
    });
  }
  return new NetListener(
    // FdServer has the two members of net.Server that NetListener uses: on() and close().
    server as unknown as net.Server,
    address,
    (socket) =>
      new NodeStreamTransport(socket, socket, {
        description: peers.get(socket) ?? address,
        redialable: true,
      }),
    async () => {},
  );
}

/** The addon, once this platform and Node can use it; otherwise TRANSPORT_UNSUPPORTED. */
function usable(address: string): VsockAddon {
  if (process.platform !== "linux") {
    throw new TransportUnsupportedError(
      `${address}: AF_VSOCK sockets work only on Linux (this is ${process.platform}); use tcp: or serial: to reach the agent`,
      { details: { address, kind: "vsock", platform: process.platform } },
    );
  }
  if (!fdSocketSupported() || !fdServerSupported()) {
    throw new TransportUnsupportedError(
      `${address}: this Node (${process.version}) has no pipe_wrap binding to poll a vsock socket with; use Node 20 to 24, or tcp:`,
      { details: { address, kind: "vsock" } },
    );
  }
  return loadVsockAddon(address);
}

function describePeer(addon: VsockAddon, fd: number, fallback: string): string {
  try {
    const [cid, port] = addon.address(fd, 1);
    return formatAddress({ kind: "vsock", cid, port });
  } catch {
    return fallback;
  }
}

function noVsock(err: unknown, address: string): TransportUnsupportedError {
  return new TransportUnsupportedError(
    `this kernel has no AF_VSOCK (EAFNOSUPPORT), needed for ${address}: in a guest, load vsock and vmw_vsock_virtio_transport (and give the VM a vsock device); on a host, load vhost_vsock; or use serial: or tcp:`,
    { cause: err, details: { address, kind: "vsock", errno: "EAFNOSUPPORT" } },
  );
}

function noLoopback(err: unknown, address: string, code: string): TransportUnsupportedError {
  return new TransportUnsupportedError(
    `${address}: this kernel has no vsock loopback (${code}), which CID 1 needs: load vsock_loopback, or use the machine's own CID`,
    { cause: err, details: { address, kind: "vsock", errno: code } },
  );
}

function connectFailed(err: Error, cid: number, port: number, timeoutMs: number): Error {
  const address = formatAddress({ kind: "vsock", cid, port });
  const code = errorLabel(err);
  const failed = (message: string) =>
    new ConnectFailedError(message, { cause: err, details: { address, errno: code } });
  switch (code) {
    case "EAFNOSUPPORT":
      return noVsock(err, address);
    case "ENODEV":
      if (cid === VMADDR_CID_LOCAL) return noLoopback(err, address, code);
      if (cid > VMADDR_CID_HOST && existsSync("/dev/vhost-vsock")) {
        return failed(
          `no VM with CID ${cid} (ENODEV) for ${address}: check the VM's guest CID, and that it is running`,
        );
      }
      return new TransportUnsupportedError(
        `no vsock transport reaches CID ${cid} (ENODEV) for ${address}: in a guest, the VM needs a vsock device (virtio-vsock, vmw_vsock_virtio_transport); on a host, load vhost_vsock and give the VM a vhost-vsock device; Firecracker VMs are reached through fc:UDS_PATH:PORT instead`,
        { cause: err, details: { address, kind: "vsock", errno: code } },
      );
    case "ECONNRESET":
    case "ECONNREFUSED":
      return failed(
        `nothing listens on port ${port} at CID ${cid} (${code}): is the agent running there (${AGENT_HINT.replace("PORT", String(port))})?`,
      );
    case "ETIMEDOUT":
      return failed(
        `no answer from ${address} within ${timeoutMs} ms (ETIMEDOUT): is a VM with CID ${cid} running, with its vsock driver loaded? A guest reaches only its host (CID 2)${cid === VMADDR_CID_LOCAL ? "; CID 1 needs vsock_loopback" : ""}`,
      );
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return failed(`CID ${cid} cannot be reached from here (${code}) for ${address}`);
    case "EACCES":
    case "EPERM":
      return failed(
        `permission denied connecting to ${address} (${code}): a security policy forbids it`,
      );
    case "ECANCELED":
      return failed(`connecting to ${address} was cancelled`);
    default:
      return failed(`cannot connect to ${address} (${code}): ${err.message}`);
  }
}

function listenFailed(err: unknown, addon: VsockAddon, cid: number, port: number): Error {
  const address = formatAddress({ kind: "vsock", cid, port });
  const code = errorLabel(err);
  switch (code) {
    case "EAFNOSUPPORT":
      return noVsock(err, address);
    case "EADDRINUSE":
      return new AddressInUseError(
        `vsock port ${port} is taken on this machine (EADDRINUSE): another process (an agent already running?) listens on it; stop it, or choose another port`,
        { cause: err, details: { address } },
      );
    case "EADDRNOTAVAIL": {
      if (cid === VMADDR_CID_LOCAL) return noLoopback(err, address, code);
      let local: number | undefined;
      try {
        local = addon.localCid();
      } catch {
        local = undefined;
      }
      const mine =
        local === undefined || local === VMADDR_CID_ANY ? "" : ` (this machine is CID ${local})`;
      return new ListenFailedError(
        `CID ${cid} is not an address of this machine${mine} (EADDRNOTAVAIL): listen on vsock:4294967295:${port} for any CID`,
        { cause: err, details: { address, localCid: local } },
      );
    }
    case "EACCES":
    case "EPERM":
      return new ListenFailedError(
        `permission denied listening on ${address} (${code}): vsock ports below 1024 need CAP_NET_BIND_SERVICE; choose a port of 1024 or more, or run as root`,
        { cause: err, details: { address } },
      );
    default:
      return new ListenFailedError(
        `cannot listen on ${address} (${code}): ${err instanceof Error ? err.message : String(err)}`,
        { cause: err, details: { address } },
      );
  }
}
