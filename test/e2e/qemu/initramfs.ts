/**
 * Writes an initramfs: an uncompressed cpio archive in the "newc" format the kernel unpacks
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than with
 * cpio(1) from a staging folder: no copy of the 100 MB node binary to stage, every entry owned by
 * root whoever builds it, and device nodes (/dev/console, which the kernel opens for init before
 * anything is mounted) without the privilege mknod needs. Uncompressed, because the kernel
 * unpacks it as fast as lz4 and it builds in a fraction of the time.
 */
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { Writable } from "node:stream";

export type InitramfsEntry =
  | { readonly type: "dir"; readonly path: string; readonly mode?: number }
  /** A file copied from `source` on the host, or with `data` as its contents. */
  | {
      readonly type: "file";
      readonly path: string;
      readonly mode?: number;
      readonly source?: string;
      readonly data?: string | Buffer;
    }
  | { readonly type: "symlink"; readonly path: string; readonly target: string }
  | {
      readonly type: "char";
      readonly path: string;
      readonly major: number;
      readonly minor: number;
      readonly mode?: number;
    };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const NEWC_MAGIC = "070701";
const TRAILER = "TRAILER!!!";

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

interface Header {
  ino: number;
  mode: number;
  size: number;
  nlink: number;
  rdevMajor?: number;
  rdevMinor?: number;
  name: string;
}

/** A newc header with its name, padded so the data that follows starts 4-byte aligned. */
function header(h: Header): Buffer {
  const name = Buffer.from(`${h.name}\0`);
  const fields = [
    h.ino,
    h.mode,
    0, // uid: root
    0, // gid: root
    h.nlink,
    0, // mtime: fixed, so the same inputs give the same bytes
    h.size,
    0, // devmajor
    0, // devminor
    h.rdevMajor ?? 0,
    h.rdevMinor ?? 0,
    name.length,
    0, // check: unused by newc
  ];
  const head = Buffer.from(NEWC_MAGIC + fields.map(hex8).join(""), "ascii");
  return Buffer.concat([head, name, pad4(head.length + name.length)]);
}

async function write(out: Writable, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, "drain");
}

/** Every parent folder of the entries' paths that is not itself an entry, parents first. */
function missingParents(entries: readonly InitramfsEntry[]): InitramfsEntry[] {
  const have = new Set(entries.map((e) => e.path));
  const dirs: InitramfsEntry[] = [];
  for (const e of entries) {
    const parts = e.path.split("/").slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (dir && !have.has(dir)) {
        have.add(dir);
        dirs.push({ type: "dir", path: dir });
      }
    }
  }
  return dirs;
}

/**
 * Writes `entries` to `file` as a newc archive. Paths are relative to the root (no leading
 * slash); folders that hold entries are added when they are not listed.
 */
export async function writeInitramfs(
  file: string,
  entries: readonly InitramfsEntry[],
): Promise<void> {
  const all = [...missingParents(entries), ...entries];
  const out = createWriteStream(file);
  const failed = once(out, "error").then(([err]) => Promise.reject(err));
  failed.catch(() => {});
  let ino = 1;
  const run = async () => {
    for (const e of all) {
      const name = e.path.replace(/^\/+/, "");
      switch (e.type) {
        case "dir":
          await write(
            out,
            header({ ino: ino++, mode: S_IFDIR | (e.mode ?? 0o755), size: 0, nlink: 2, name }),
          );
          break;
        case "symlink": {
          const target = Buffer.from(e.target);
          await write(
            out,
            header({ ino: ino++, mode: S_IFLNK | 0o777, size: target.length, nlink: 1, name }),
          );
          await write(out, Buffer.concat([target, pad4(target.length)]));
          break;
        }
        case "char":
          await write(
            out,
            header({
              ino: ino++,
              mode: S_IFCHR | (e.mode ?? 0o600),
              size: 0,
              nlink: 1,
              rdevMajor: e.major,
              rdevMinor: e.minor,
              name,
            }),
          );
          break;
        case "file": {
          const mode = S_IFREG | (e.mode ?? 0o644);
          if (e.source !== undefined) {
            const { size } = await stat(e.source);
            await write(out, header({ ino: ino++, mode, size, nlink: 1, name }));
            let copied = 0;
            for await (const chunk of createReadStream(e.source, { highWaterMark: 1 << 20 })) {
              copied += (chunk as Buffer).length;
              await write(out, chunk as Buffer);
            }
            if (copied !== size) throw new Error(`${e.source} changed size while being packed`);
            await write(out, pad4(size));
          } else {
            const data = Buffer.from(e.data ?? "");
            await write(out, header({ ino: ino++, mode, size: data.length, nlink: 1, name }));
            await write(out, Buffer.concat([data, pad4(data.length)]));
          }
          break;
        }
      }
    }
    await write(out, header({ ino: 0, mode: 0, size: 0, nlink: 1, name: TRAILER }));
    out.end();
    await once(out, "finish");
  };
  try {
    await Promise.race([run(), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
}
