/**
 * A command writing `bytes` random bytes to stdout and into `file`, then the file's sha256 to
 * stderr: what arrived is checked against the command's own hash of what it wrote.
 */
export function randomOutput(bytes: number, file: string): string[] {
  return ["sh", "-c", `head -c ${bytes} /dev/urandom | tee "$1"; sha256sum "$1" >&2`, "sh", file];
}
