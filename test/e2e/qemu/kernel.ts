/**
 * The guest's kernel: Debian's cloud kernel (virtio drivers, no initrd needed to find a root
 * disk), fetched with apt-get download, and the modules the guest loads, in the order insmod
 * needs them. Cached in CACHE_DIR/kernel/PACKAGE/.
 */
import { existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { moduleDepends, moduleName } from "./elf.ts";
import { atomicDir, CACHE_DIR, ImageUnavailable, listFiles, run, tail } from "./tools.ts";

/** Debian's metapackage whose dependency is the current cloud kernel. */
export const KERNEL_METAPACKAGE = "linux-image-cloud-amd64";
/** Modules the guest loads (with what they depend on): virtio-serial and the virtio NIC. */
const GUEST_MODULES = ["virtio_pci", "virtio_console", "virtio_net"] as const;

/** The versioned kernel package the metapackage points at today (its name changes with releases). */
export async function resolveKernelPackage(): Promise<string> {
  const forced = process.env.GUESTLINK_QEMU_KERNEL_PACKAGE;
  if (forced) return forced;
  let out: string;
  try {
    ({ stdout: out } = await run("apt-cache", ["depends", KERNEL_METAPACKAGE]));
  } catch (err) {
    throw new ImageUnavailable(
      `cannot resolve ${KERNEL_METAPACKAGE} (run apt-get update first?): ${tail(err)}`,
    );
  }
  const m = /^\s*Depends:\s*(linux-image-\S+)/m.exec(out);
  if (!m?.[1])
    throw new ImageUnavailable(`${KERNEL_METAPACKAGE} depends on no linux-image package`);
  return m[1];
}

export interface KernelFiles {
  readonly vmlinuz: string;
  readonly release: string;
  /** Module files in the order they must be loaded. */
  readonly modules: readonly string[];
}

/** The kernel and the guest's modules, decompressed and in load order, from the cache or apt. */
export async function kernelFiles(pkg: string, log: (line: string) => void): Promise<KernelFiles> {
  const dir = join(CACHE_DIR, "kernel", pkg);
  const manifest = join(dir, "kernel.json");
  if (!existsSync(manifest)) {
    log(`downloading ${pkg}`);
    await atomicDir(dir, (tmp) => extractKernel(pkg, tmp));
  }
  const { release, modules } = JSON.parse(await readFile(manifest, "utf8")) as {
    release: string;
    modules: string[];
  };
  return {
    vmlinuz: join(dir, "vmlinuz"),
    release,
    modules: modules.map((m) => join(dir, "modules", m)),
  };
}

async function extractKernel(pkg: string, out: string): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "guestlink-kernel-"));
  try {
    // apt-get download drops to the _apt user when it can; let it write here.
    await chmod(work, 0o777);
    try {
      await run("apt-get", ["download", pkg], { cwd: work, maxBuffer: 16 << 20 });
    } catch (err) {
      throw new ImageUnavailable(
        `cannot download the kernel (apt-get download ${pkg}): ${tail(err)}`,
      );
    }
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (deb === undefined) throw new ImageUnavailable(`apt-get download ${pkg} saved no .deb`);
    const tree = join(work, "tree");
    await run("dpkg-deb", ["-x", join(work, deb), tree]);

    const releases = await readdir(join(tree, "lib", "modules"));
    const release = releases[0];
    if (release === undefined || releases.length !== 1) {
      throw new Error(`${pkg} holds ${releases.length} module trees, expected one`);
    }
    await copyFile(join(tree, "boot", `vmlinuz-${release}`), join(out, "vmlinuz"));

    const moduleDir = join(tree, "lib", "modules", release);
    const files = new Map<string, string>();
    for (const file of await listFiles(join(moduleDir, "kernel"))) {
      if (/\.ko(\.(xz|zst|gz))?$/.test(file)) files.set(moduleName(file), file);
    }
    const builtin = new Set(
      (await readFile(join(moduleDir, "modules.builtin"), "utf8"))
        .split("\n")
        .filter(Boolean)
        .map(moduleName),
    );
    // modules.dep is made by depmod at install time, so it is not in the package: the order
    // comes from each module's own `depends=`, dependencies first.
    const order: string[] = [];
    const seen = new Set<string>();
    const visit = async (name: string, neededBy: string): Promise<void> => {
      if (seen.has(name) || builtin.has(name)) return;
      seen.add(name);
      const file = files.get(name);
      if (file === undefined)
        throw new Error(`${pkg} has no module ${name} (needed by ${neededBy})`);
      const ko = await decompressModule(file);
      for (const dep of moduleDepends(ko, file)) await visit(dep, name);
      await writeFile(join(out, "modules", `${name}.ko`), ko);
      order.push(`${name}.ko`);
    };
    await mkdir(join(out, "modules"));
    for (const name of GUEST_MODULES) await visit(name, "the guest");
    await writeFile(
      join(out, "kernel.json"),
      `${JSON.stringify({ package: pkg, release, modules: order }, null, 2)}\n`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A module file's ELF: busybox insmod takes no compressed modules, so they are unpacked here. */
async function decompressModule(file: string): Promise<Buffer> {
  const tool = file.endsWith(".xz")
    ? "xz"
    : file.endsWith(".zst")
      ? "zstd"
      : file.endsWith(".gz")
        ? "gzip"
        : undefined;
  if (tool === undefined) return readFile(file);
  try {
    const { stdout } = await run(tool, ["-dc", file], { encoding: "buffer", maxBuffer: 256 << 20 });
    return stdout;
  } catch (err) {
    throw new ImageUnavailable(`cannot decompress ${file} with ${tool}: ${tail(err)}`);
  }
}
