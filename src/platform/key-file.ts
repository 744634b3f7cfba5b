/**
 * Key files for keyed `tcp:` (transport/tls.ts): one line of 64 hexadecimal digits, the 32 bytes
 * of the key, written with mode 0600. Reading accepts upper or lower case and surrounding blanks.
 */
import { randomBytes } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { InvalidOptionError } from "../errors.ts";
import { errorLabel } from "../transport/node-stream.ts";
import { KEY_BYTES } from "../transport/tls.ts";

/** A new random key, as it is written to a key file (64 hex digits and a newline). */
export function newKeyText(): string {
  return `${randomBytes(KEY_BYTES).toString("hex")}\n`;
}

/** Parses a key file's text; throws INVALID_OPTION naming `source` if it is not one key. */
export function parseKeyText(text: string, source: string): Uint8Array {
  const hex = text.trim();
  if (!new RegExp(`^[0-9a-fA-F]{${KEY_BYTES * 2}}$`).test(hex)) {
    throw new InvalidOptionError(
      `${source} is not a guestlink key (one line of ${KEY_BYTES * 2} hex digits): make one with guestlink keygen FILE`,
      { details: { keyFile: source } },
    );
  }
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

/** Reads the key in `path`; INVALID_OPTION if it cannot be read or holds no key. */
export async function readKeyFile(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new InvalidOptionError(`cannot read key file ${path} (${errorLabel(err)})`, {
      cause: err,
      details: { keyFile: path },
    });
  }
  return parseKeyText(text, `key file ${path}`);
}

/**
 * Writes a new key to `path`, which must not exist yet (never overwrites a key agents may use),
 * readable by its owner only (0600). INVALID_OPTION if it exists or cannot be created.
 */
export async function writeNewKeyFile(path: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "wx", 0o600);
  } catch (err) {
    const code = errorLabel(err);
    throw new InvalidOptionError(
      code === "EEXIST"
        ? `${path} already exists: a key is never overwritten (agents may use it); remove it first, or choose another name`
        : `cannot create key file ${path} (${code})`,
      { cause: err, details: { keyFile: path } },
    );
  }
  try {
    // The umask may have taken bits off the mode, never added any: 0600 either way after this.
    await handle.chmod(0o600);
    await handle.writeFile(newKeyText());
    await handle.sync();
  } finally {
    await handle.close();
  }
}
