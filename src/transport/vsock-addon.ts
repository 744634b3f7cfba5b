/**
 * Finding and loading guestlink's AF_VSOCK addon (`native/vsock.c`, built at install time by
 * `scripts/build-native.mjs`). It is looked for as `platform/native-addon.ts` says: at
 * `$GUESTLINK_VSOCK_ADDON` when that is set (and nowhere else then); else beside this module or
 * the bundle it is in, and in each folder above it and its `native/build/Release/`:
 * `guestlink_vsock.node` beside `guestlink-agent.cjs` is how a guest without node_modules gets it.
 *
 * A missing or unloadable addon is TRANSPORT_UNSUPPORTED, saying where it looked and how to
 * build it.
 */
import { TransportUnsupportedError } from "../errors.ts";
import {
  ADDON_BUILD_DIR,
  addonCandidates,
  findAddon,
  requireAddon,
} from "../platform/native-addon.ts";

/** The addon's file name, wherever it is. */
export const VSOCK_ADDON_FILE = "guestlink_vsock.node";
/** Where the build puts it, relative to the package root. */
export const VSOCK_ADDON_BUILD_PATH = `${ADDON_BUILD_DIR}/${VSOCK_ADDON_FILE}`;
/** Environment variable naming the addon file to load instead of searching. */
export const VSOCK_ADDON_ENV = "GUESTLINK_VSOCK_ADDON";

/** What `native/vsock.c` exports. Errors are Node-style system errors (`code`, `errno`, `syscall`). */
export interface VsockAddon {
  /** A bound, listening, close-on-exec socket's descriptor. */
  listen(cid: number, port: number, backlog: number): number;
  /** Connects in the background; `callback(err, fd)` once connected, failed or cancelled. */
  connect(
    cid: number,
    port: number,
    timeoutMs: number,
    callback: (err: Error | null, fd: number | undefined) => void,
  ): object;
  /** Ends a connect still waiting (it fails with ECANCELED); nothing once it is done. */
  cancel(request: object): void;
  /** `[cid, port]` of the socket's own end, or of its peer. */
  address(fd: number, peer: 0 | 1): [number, number];
  /** This machine's CID, as /dev/vsock reports it. */
  localCid(): number;
}

const loaded = new Map<string, VsockAddon>();

/** Where the addon is looked for, in order. */
export function vsockAddonCandidates(): string[] {
  return addonCandidates(VSOCK_ADDON_FILE, process.env[VSOCK_ADDON_ENV]);
}

/** Loads the addon, or throws TRANSPORT_UNSUPPORTED saying why and what to do. */
export function loadVsockAddon(address: string): VsockAddon {
  const candidates = vsockAddonCandidates();
  const path = findAddon(candidates);
  if (path === undefined) {
    throw new TransportUnsupportedError(
      `${address} needs guestlink's vsock addon (${VSOCK_ADDON_FILE}), which is not built: looked in ${candidates.join(", ")}. Build it with \`npm rebuild guestlink\` (or \`node scripts/build-native.mjs\` in the package folder; needs a C compiler, make and Python), put it next to the bundled agent, or set ${VSOCK_ADDON_ENV} to its path`,
      { details: { address, kind: "vsock", looked: candidates } },
    );
  }
  const cached = loaded.get(path);
  if (cached !== undefined) return cached;
  let addon: VsockAddon;
  try {
    addon = requireAddon(path) as VsockAddon;
  } catch (err) {
    throw new TransportUnsupportedError(
      `${address} needs guestlink's vsock addon, and ${path} cannot be loaded (${err instanceof Error ? err.message.split("\n")[0] : String(err)}): rebuild it for this machine and Node (\`npm rebuild guestlink\`), or set ${VSOCK_ADDON_ENV} to one that fits`,
      { cause: err, details: { address, kind: "vsock", path } },
    );
  }
  if (typeof addon.listen !== "function" || typeof addon.connect !== "function") {
    throw new TransportUnsupportedError(
      `${path} is not guestlink's vsock addon (it lacks listen/connect): set ${VSOCK_ADDON_ENV} to the right file, or rebuild it`,
      { details: { address, kind: "vsock", path } },
    );
  }
  loaded.set(path, addon);
  return addon;
}
