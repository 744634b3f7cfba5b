/**
 * The buffers that sockets and pipes are read into (transport/slab-reads.ts, agent/pipe-reads.ts).
 *
 * A slab whose bytes come back (recycle.ts) is read into again by its reader. One whose bytes a
 * consumer keeps (a stream read with `for await` and not told back) is left to the garbage
 * collector, and with Node's own buffers glibc then returns its memory to the system: a freed
 * mmap, or the top of the heap trimmed. The next slab faults its pages in anew, up to 256 faults
 * per MiB read at about 12.5 us each on the VMs we run on. Measured with the stream of
 * `npm run bench -- session`: the reader took 140 to 144,000 faults per GiB and read at 220 to
 * 980 MB/s, depending on what glibc had done before.
 *
 * So after the first few slabs of a process (a short command never loads it), slabs come from
 * guestlink's slab addon (native/slab.c): memory that goes back on a free list of the addon's
 * once V8 has collected its ArrayBuffer, when nothing in JavaScript can reach it any more, and
 * is handed out again from there with its pages present. The same stream then took 150 to 1,400
 * faults per GiB, and read at 725 to 960 MB/s. The list holds up to 64 MiB (about what one
 * collection frees); it is emptied when no slab was taken for IDLE_TRIM_MS.
 *
 * Without the addon (not built, `GUESTLINK_SLAB_ADDON=off`), slabs are Node's own buffers.
 */
import { addonCandidates, findAddon, requireAddon } from "./native-addon.ts";

export const SLAB_ADDON_FILE = "guestlink_slab.node";
/** The addon's path, or `off` for Node's own buffers. */
export const SLAB_ADDON_ENV = "GUESTLINK_SLAB_ADDON";
/** Slabs a process takes from Node before it loads the addon. */
export const PLAIN_SLABS = 8;
/** The addon's free list is emptied when no slab was taken for this long. */
export const IDLE_TRIM_MS = 10_000;

/** What native/slab.c counts: slabs mapped, taken again, unmapped; bytes on the free list. */
export interface SlabStats {
  mapped: number;
  reused: number;
  unmapped: number;
  freeBytes: number;
}

interface SlabAddon {
  slab(bytes: number): ArrayBuffer;
  trim(): number;
  stats(): SlabStats;
}

let plainSlabs = 0;
/** The addon; null when there is none (looked for once). */
let addon: SlabAddon | null | undefined;
let takenSinceTrim = false;
/** The idle trim's interval runs (from the first slab of the addon's on, unref'd). */
let trimming = false;

/** A slab of `bytes`, not zeroed: its reader hands out only what it read into it. */
export function newSlab(bytes: number): Uint8Array {
  if (plainSlabs < PLAIN_SLABS) {
    plainSlabs++;
    return Buffer.allocUnsafeSlow(bytes);
  }
  addon ??= loadSlabAddon();
  if (addon === null) return Buffer.allocUnsafeSlow(bytes);
  takenSinceTrim = true;
  if (!trimming) {
    setInterval(trimWhenIdle, IDLE_TRIM_MS).unref();
    trimming = true;
  }
  return Buffer.from(addon.slab(bytes));
}

function trimWhenIdle(): void {
  if (!takenSinceTrim) addon?.trim();
  takenSinceTrim = false;
}

/** The slab addon's file, or undefined when slabs are Node's own (not Linux, turned off, not built). */
export function slabAddonPath(): string | undefined {
  const override = process.env[SLAB_ADDON_ENV];
  if (process.platform !== "linux" || override === "off") return undefined;
  return findAddon(addonCandidates(SLAB_ADDON_FILE, override));
}

function loadSlabAddon(): SlabAddon | null {
  const path = slabAddonPath();
  if (path === undefined) return null;
  try {
    const found = requireAddon(path) as Partial<SlabAddon>;
    return typeof found.slab === "function" && typeof found.trim === "function"
      ? (found as SlabAddon)
      : null;
  } catch {
    // An addon built for another Node or machine: slabs are Node's own, as without one.
    return null;
  }
}

/** The addon's counters, or undefined when slabs are Node's own (for tests and benchmarks). */
export function slabStats(): SlabStats | undefined {
  return addon?.stats();
}

/** Empties the addon's free list now; the bytes unmapped (for tests). */
export function trimSlabs(): number {
  return addon?.trim() ?? 0;
}
