/**
 * Just enough of ELF64 (little-endian) to build the test guest without binutils or kmod on the
 * host: whether a program is statically linked (no PT_INTERP) and where its loader is, and a
 * kernel module's `.modinfo` strings (`depends=virtio,virtio_ring`), which is what modules.dep
 * would be made from.
 */

const ELF_MAGIC = 0x464c457f; // "\x7fELF" read as little-endian u32
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const PT_INTERP = 3;

function checkElf64(elf: Buffer, what: string): void {
  if (elf.length < 64 || elf.readUInt32LE(0) !== ELF_MAGIC) {
    throw new Error(`${what} is not an ELF file`);
  }
  if (elf[4] !== ELFCLASS64 || elf[5] !== ELFDATA2LSB) {
    throw new Error(`${what} is not a little-endian 64-bit ELF file`);
  }
}

function cString(buf: Buffer, start: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString("utf8", start, end < 0 ? buf.length : end);
}

/** The program's dynamic loader (PT_INTERP), or undefined when it is statically linked. */
export function elfInterpreter(elf: Buffer, what = "the file"): string | undefined {
  checkElf64(elf, what);
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== PT_INTERP) continue;
    const offset = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    return cString(elf.subarray(offset, offset + size), 0);
  }
  return undefined;
}

/** The contents of a section by name, or undefined if there is none. */
function elfSection(elf: Buffer, name: string, what: string): Buffer | undefined {
  checkElf64(elf, what);
  const shoff = Number(elf.readBigUInt64LE(40));
  const shentsize = elf.readUInt16LE(58);
  const shnum = elf.readUInt16LE(60);
  const shstrndx = elf.readUInt16LE(62);
  const header = (i: number) => {
    const sh = shoff + i * shentsize;
    return {
      name: elf.readUInt32LE(sh),
      offset: Number(elf.readBigUInt64LE(sh + 24)),
      size: Number(elf.readBigUInt64LE(sh + 32)),
    };
  };
  const names = header(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    if (cString(elf, names.offset + h.name) === name) {
      return elf.subarray(h.offset, h.offset + h.size);
    }
  }
  return undefined;
}

/** A kernel module's modinfo as `modinfo -F KEY` would show it: `depends` → ["virtio", …]. */
export function moduleInfo(ko: Buffer, what = "the module"): Map<string, string[]> {
  const section = elfSection(ko, ".modinfo", what);
  if (section === undefined) throw new Error(`${what} has no .modinfo section`);
  const info = new Map<string, string[]>();
  for (const entry of section.toString("utf8").split("\0")) {
    const eq = entry.indexOf("=");
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    info.set(key, [...(info.get(key) ?? []), entry.slice(eq + 1)]);
  }
  return info;
}

/** The modules a module needs loaded first (its `depends=`), names normalised to underscores. */
export function moduleDepends(ko: Buffer, what?: string): string[] {
  const depends = moduleInfo(ko, what).get("depends")?.[0] ?? "";
  return depends
    .split(",")
    .map((d) => moduleName(d))
    .filter(Boolean);
}

/** A module's canonical name from a file or dependency name: `virtio-rng.ko.xz` → virtio_rng. */
export function moduleName(fileOrName: string): string {
  const base = fileOrName.slice(fileOrName.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}
