/**
 * The QEMU test guest: Debian's cloud kernel and an initramfs holding busybox, the host's own
 * node with its libraries, the bundled agent (dist/guestlink-agent.cjs), the virtio modules and
 * guest/init.sh as /init. Built once and cached in .cache/qemu/, keyed by a hash of everything
 * that goes in, so a test run after the first spends no time here.
 *
 * What the host needs: qemu-system-x86_64 and a static busybox at /bin/busybox (Debian packages
 * qemu-system-x86 and busybox-static), and apt (apt-cache, apt-get download, dpkg) to fetch the
 * kernel. A machine without them cannot run the guest: `prepareImage` rejects with
 * `ImageUnavailable`, whose message says what is missing and how to get it, and the tests skip
 * with it. Nothing is installed behind the user's back; GUESTLINK_QEMU_INSTALL=1 (as root) lets
 * this module apt-get install what is missing. cpio(1) is not needed (see initramfs.ts).
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, realpath, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { elfInterpreter } from "./elf.ts";
import { type InitramfsEntry, writeInitramfs } from "./initramfs.ts";
import {
  KERNEL_METAPACKAGE,
  type KernelFiles,
  kernelFiles,
  resolveKernelPackage,
} from "./kernel.ts";
import {
  atomicDir,
  CACHE_DIR,
  ImageUnavailable,
  listFiles,
  ROOT,
  run,
  tail,
  which,
} from "./tools.ts";

export { CACHE_DIR, ImageUnavailable, ROOT, which } from "./tools.ts";

const QEMU = "qemu-system-x86_64";
const BUSYBOX = "/bin/busybox";
const AGENT_BUNDLE = join(ROOT, "dist", "guestlink-agent.cjs");
/**
 * The spawn addon beside the bundle (`npm run build:agent` copies it there when it was built): in
 * the guest the agent starts commands with posix_spawn and can give them a terminal. It loads
 * there because the guest runs the host's own node and libc.
 */
export const SPAWN_ADDON = join(ROOT, "dist", "guestlink_spawn.node");
export const SLAB_ADDON = join(ROOT, "dist", "guestlink_slab.node");
const GUEST_DIR = fileURLToPath(new URL("./guest/", import.meta.url));
const INIT_SCRIPT = join(GUEST_DIR, "init.sh");
const BARE_PORT_SCRIPT = join(GUEST_DIR, "bare-port.cjs");
/** Bumped when the layout of the image changes in a way its inputs' hashes would not show. */
const IMAGE_FORMAT = 1;
/** Images kept in the cache besides the one in use (each is ~110 MB, mostly node). */
const IMAGES_KEPT = 2;
/** What the image's debian packages are called, for messages and GUESTLINK_QEMU_INSTALL. */
const HOST_PACKAGES = "qemu-system-x86 busybox-static";

export interface GuestImage {
  /** The kernel to boot (`-kernel`). */
  readonly kernel: string;
  /** The initramfs (`-initrd`), an uncompressed newc cpio. */
  readonly initrd: string;
  /** The Debian package the kernel came from, e.g. linux-image-6.1.0-57-cloud-amd64. */
  readonly kernelPackage: string;
  /** What `uname -r` says in the guest, e.g. 6.1.0-57-cloud-amd64. */
  readonly kernelRelease: string;
  /** The QEMU binary. */
  readonly qemu: string;
  /** The hash of the image's inputs; its cache folder's name. */
  readonly key: string;
  /** Whether this call built the initramfs (false: it came from the cache). */
  readonly built: boolean;
}

export interface PrepareImageOptions {
  /** Progress lines for people ("downloading the kernel…"). */
  log?: (line: string) => void;
}

/**
 * Returns the guest image, building what is not cached. Rejects with ImageUnavailable when this
 * machine lacks what it takes (see the module comment); any other rejection is a bug.
 */
export async function prepareImage(options: PrepareImageOptions = {}): Promise<GuestImage> {
  const log = options.log ?? (() => {});
  const qemu = await hostRequirements(log);
  const kernelPackage = await resolveKernelPackage();
  const kernel = await kernelFiles(kernelPackage, log);
  await ensureAgentBundle(log);
  const node = await nodeFiles();

  const inputs = {
    format: IMAGE_FORMAT,
    kernelPackage,
    node: { version: process.version, files: await Promise.all(node.map(fileStamp)) },
    busybox: await sha256File(BUSYBOX),
    agent: await sha256File(AGENT_BUNDLE),
    spawnAddon: existsSync(SPAWN_ADDON) ? await sha256File(SPAWN_ADDON) : null,
    slabAddon: existsSync(SLAB_ADDON) ? await sha256File(SLAB_ADDON) : null,
    init: await sha256File(INIT_SCRIPT),
    barePort: await sha256File(BARE_PORT_SCRIPT),
    builder: await sha256Files(
      ["./image.ts", "./initramfs.ts", "./kernel.ts"].map((f) =>
        fileURLToPath(new URL(f, import.meta.url)),
      ),
    ),
  };
  const key = sha256(JSON.stringify(inputs)).slice(0, 16);
  const dir = join(CACHE_DIR, "image", key);
  const initrd = join(dir, "initrd.cpio");
  let built = false;
  if (!existsSync(initrd)) {
    log(`building the initramfs ${relative(ROOT, initrd)}`);
    await atomicDir(dir, async (tmp) => {
      await writeInitramfs(join(tmp, "initrd.cpio"), guestEntries(kernel, node));
      await writeFile(join(tmp, "inputs.json"), `${JSON.stringify(inputs, null, 2)}\n`);
    });
    built = true;
  }
  const now = new Date();
  await utimes(dir, now, now);
  await pruneImages(key);
  return {
    kernel: kernel.vmlinuz,
    initrd,
    kernelPackage,
    kernelRelease: kernel.release,
    qemu,
    key,
    built,
  };
}

async function missingHostPackages(): Promise<string[]> {
  const missing: string[] = [];
  if ((await which(QEMU)) === undefined) missing.push("qemu-system-x86");
  let busybox: Buffer | undefined;
  try {
    busybox = await readFile(BUSYBOX);
  } catch {}
  // Debian's busybox package is dynamically linked and cannot run in a guest without its libc.
  if (busybox === undefined || elfInterpreter(busybox, BUSYBOX) !== undefined) {
    missing.push("busybox-static");
  }
  return missing;
}

/** Checks the host's tools (installing them when GUESTLINK_QEMU_INSTALL=1); returns QEMU's path. */
async function hostRequirements(log: (line: string) => void): Promise<string> {
  for (const tool of ["apt-cache", "apt-get", "dpkg-deb"]) {
    if ((await which(tool)) === undefined) {
      throw new ImageUnavailable(
        `${tool} is missing: the guest's kernel comes from Debian's ${KERNEL_METAPACKAGE} (a Debian or Ubuntu host is needed)`,
      );
    }
  }
  let missing = await missingHostPackages();
  if (missing.length > 0 && process.env.GUESTLINK_QEMU_INSTALL === "1") {
    if (process.getuid?.() !== 0) {
      throw new ImageUnavailable(
        `GUESTLINK_QEMU_INSTALL=1 needs root to install ${missing.join(" ")}`,
      );
    }
    log(`apt-get install ${missing.join(" ")}`);
    try {
      await run("apt-get", ["install", "-y", "--no-install-recommends", ...missing], {
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
        maxBuffer: 64 << 20,
      });
    } catch (err) {
      throw new ImageUnavailable(`apt-get install ${missing.join(" ")} failed: ${tail(err)}`);
    }
    missing = await missingHostPackages();
  }
  if (missing.length > 0) {
    throw new ImageUnavailable(
      `missing ${missing.join(" and ")}: apt-get install --no-install-recommends ${HOST_PACKAGES} (or set GUESTLINK_QEMU_INSTALL=1 as root)`,
    );
  }
  return (await which(QEMU)) as string;
}

/**
 * Builds the agent bundle when it is missing or older than the sources (`npm run build` does not
 * make it), so the guest never runs yesterday's agent.
 */
async function ensureAgentBundle(log: (line: string) => void): Promise<void> {
  const bundled = existsSync(AGENT_BUNDLE) ? (await stat(AGENT_BUNDLE)).mtimeMs : 0;
  const sources = [
    ...(await listFiles(join(ROOT, "src"))),
    join(ROOT, "scripts", "build-agent.ts"),
  ];
  const stamps = await Promise.all(sources.map(async (f) => (await stat(f)).mtimeMs));
  if (bundled > Math.max(...stamps)) return;
  log("bundling the agent (npm run build:agent)");
  try {
    await run(process.execPath, ["--import", "tsx", "scripts/build-agent.ts"], { cwd: ROOT });
  } catch (err) {
    // No falling back to an older bundle: an agent that is not the host's code fails in ways
    // that have nothing to do with what is being tested (a protocol version mismatch).
    throw new Error(`npm run build:agent failed: ${tail(err)}`, { cause: err });
  }
}

/** The host's node as the guest runs it: the binary, its loader and the libraries ldd lists. */
async function nodeFiles(): Promise<{ path: string; source: string }[]> {
  const node = process.execPath;
  const files = [{ path: node, source: await realpath(node) }];
  const interpreter = elfInterpreter(await readFile(files[0]?.source ?? node), node);
  if (interpreter === undefined) return files;
  const { stdout } = await run("ldd", [node]);
  const paths = new Set([interpreter]);
  for (const line of stdout.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) paths.add(m[1]);
  }
  for (const path of paths) files.push({ path, source: await realpath(path) });
  return files;
}

/** Everything in the initramfs. */
function guestEntries(
  kernel: KernelFiles,
  node: readonly { path: string; source: string }[],
): InitramfsEntry[] {
  const entries: InitramfsEntry[] = [
    { type: "dir", path: "dev" },
    { type: "char", path: "dev/console", major: 5, minor: 1 },
    { type: "char", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    { type: "dir", path: "tmp", mode: 0o1777 },
    { type: "dir", path: "root", mode: 0o700 },
    { type: "file", path: "init", source: INIT_SCRIPT, mode: 0o755 },
    { type: "file", path: "bin/busybox", source: BUSYBOX, mode: 0o755 },
    { type: "symlink", path: "bin/sh", target: "busybox" },
    { type: "file", path: "guestlink-agent.cjs", source: AGENT_BUNDLE },
    ...(existsSync(SPAWN_ADDON)
      ? [{ type: "file" as const, path: "guestlink_spawn.node", source: SPAWN_ADDON }]
      : []),
    ...(existsSync(SLAB_ADDON)
      ? [{ type: "file" as const, path: "guestlink_slab.node", source: SLAB_ADDON }]
      : []),
    { type: "file", path: "bare-port.cjs", source: BARE_PORT_SCRIPT },
    { type: "file", path: "etc/hostname", data: "guestlink-vm\n" },
    {
      type: "file",
      path: "etc/hosts",
      data: "127.0.0.1 localhost\n::1 localhost\n127.0.1.1 guestlink-vm\n",
    },
    { type: "file", path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\n" },
    { type: "file", path: "etc/group", data: "root:x:0:\n" },
    // QEMU's user-mode network has its DNS forwarder at 10.0.2.3.
    { type: "file", path: "etc/resolv.conf", data: "nameserver 10.0.2.3\n" },
    {
      type: "file",
      path: "lib/modules/load-order",
      data: kernel.modules.map((m) => `${m.slice(m.lastIndexOf("/") + 1)}\n`).join(""),
    },
  ];
  for (const m of kernel.modules) {
    entries.push({
      type: "file",
      path: `lib/modules/${m.slice(m.lastIndexOf("/") + 1)}`,
      source: m,
    });
  }
  const seen = new Set<string>();
  for (const f of node) {
    const path = f.path.replace(/^\/+/, "");
    if (seen.has(path)) continue;
    seen.add(path);
    entries.push({ type: "file", path, source: f.source, mode: 0o755 });
  }
  if (!seen.has("usr/bin/node")) {
    entries.push({ type: "symlink", path: "usr/bin/node", target: process.execPath });
  }
  return entries;
}

/** Removes all but the newest IMAGES_KEPT images besides `keep`. */
async function pruneImages(keep: string): Promise<void> {
  const root = join(CACHE_DIR, "image");
  const dirs = await Promise.all(
    (await readdir(root))
      .filter((d) => d !== keep && !d.includes(".tmp-"))
      .map(async (d) => ({ d, mtime: (await stat(join(root, d))).mtimeMs })),
  );
  dirs.sort((a, b) => b.mtime - a.mtime);
  for (const { d } of dirs.slice(IMAGES_KEPT)) {
    await rm(join(root, d), { recursive: true, force: true });
  }
}

async function fileStamp(f: { path: string; source: string }) {
  const s = await stat(f.source);
  return { path: f.path, source: f.source, size: s.size, mtimeMs: s.mtimeMs };
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

async function sha256File(file: string): Promise<string> {
  try {
    return sha256(await readFile(file));
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

async function sha256Files(files: readonly string[]): Promise<string> {
  return sha256((await Promise.all(files.map(sha256File))).join("\n"));
}

// `npx tsx test/e2e/qemu/image.ts`: build (or find) the image and print where it is.
if (
  process.argv[1] !== undefined &&
  (await realpath(process.argv[1])) === fileURLToPath(import.meta.url)
) {
  const image = await prepareImage({ log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(
    `kernel  ${image.kernel}\ninitrd  ${image.initrd}\nuname   ${image.kernelRelease} (${image.kernelPackage})\n`,
  );
}
