/**
 * Paths that match a pattern with `*` in it, found live: the mediator's `mailbox:/srv/vms/` +
 * `*` + `/mediator` is one path per folder in /srv/vms, and what `*` matched names it (`vm-1`). The pattern is matched up to its
 * last segment holding a `*`, against what exists (folders, or anything when that segment is
 * the last, as in `/run/vms/` + `*.sock`); the rest is appended as written (it is what the caller
 * creates there: a socket, a mailbox folder). Rescanned every `pollMs`: a folder
 * that appears is reported once, one that vanishes once. Polling, not fs.watch: it works the
 * same on every filesystem, shared folders (9p, virtiofs) included.
 */
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

export interface Match {
  /** The path with each `*` filled in. */
  path: string;
  /** What the `*`s matched, joined with `/`. */
  name: string;
}

export interface DiscoverEvents {
  /** A new match; the scan (and `start()`) waits for what it returns. */
  found(match: Match): void | Promise<void>;
  lost(match: Match): void;
}

/** `*` matches any run of characters but `/`; a name starting with `.` only if the pattern does. */
function segmentMatcher(segment: string): RegExp {
  const escaped = segment.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replaceAll("*", "([^/]*)");
  return new RegExp(`^${escaped}$`);
}

export class Discovery {
  readonly pattern: string;
  readonly #events: DiscoverEvents;
  readonly #pollMs: number;
  readonly #known = new Map<string, Match>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #scan: Promise<void> = Promise.resolve();

  readonly #existing: boolean;

  /** With `existing`, a match counts only while its whole path exists (a socket file). */
  constructor(pattern: string, events: DiscoverEvents, pollMs = 500, existing = false) {
    if (!pattern.startsWith("/")) throw new Error(`a pattern is an absolute path: ${pattern}`);
    this.pattern = pattern;
    this.#events = events;
    this.#pollMs = pollMs;
    this.#existing = existing;
  }

  /** Scans now and then every `pollMs`; resolves after the first scan. */
  start(): Promise<void> {
    this.#scan = this.#rescan();
    return this.#scan;
  }

  /** What is matched now. */
  get matches(): Match[] {
    return [...this.#known.values()];
  }

  /** Forgets a match, so the next scan reports it again if it is still there (a retry). */
  forget(path: string): void {
    this.#known.delete(path);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#scan;
  }

  async #rescan(): Promise<void> {
    const found = await expand(this.pattern, this.#existing);
    if (this.#stopped) return;
    const now = new Map(found.map((m) => [m.path, m]));
    for (const [path, match] of this.#known) {
      if (!now.has(path)) {
        this.#known.delete(path);
        this.#events.lost(match);
      }
    }
    const starting: (void | Promise<void>)[] = [];
    for (const [path, match] of now) {
      if (!this.#known.has(path)) {
        this.#known.set(path, match);
        starting.push(this.#events.found(match));
      }
    }
    await Promise.allSettled(starting);
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#scan = this.#rescan();
    }, this.#pollMs);
    this.#timer.unref();
  }
}

/** Every path the pattern matches now (folders up to its last `*` segment, then as written). */
export async function expand(pattern: string, existing = false): Promise<Match[]> {
  const segments = pattern.split("/").slice(1);
  let last = -1;
  segments.forEach((s, i) => {
    if (s.includes("*")) last = i;
  });
  if (last < 0) return [{ path: pattern, name: "" }];
  let partial: { path: string; names: string[] }[] = [{ path: "/", names: [] }];
  for (let i = 0; i <= last; i++) {
    const segment = segments[i] as string;
    const next: typeof partial = [];
    for (const p of partial) {
      if (!segment.includes("*")) {
        next.push({ path: join(p.path, segment), names: p.names });
        continue;
      }
      const re = segmentMatcher(segment);
      let entries: import("node:fs").Dirent[];
      try {
        entries = await readdir(p.path, { withFileTypes: true });
      } catch {
        continue; // gone, or not a folder: nothing matches under it
      }
      for (const e of entries) {
        // A `*` in the last segment matches anything there (sockets); before it, folders.
        if (!e.isDirectory() && i < segments.length - 1) continue;
        if (e.name.startsWith(".") && !segment.startsWith(".")) continue;
        const m = re.exec(e.name);
        if (m !== null)
          next.push({ path: join(p.path, e.name), names: [...p.names, ...m.slice(1)] });
      }
    }
    partial = next;
  }
  const rest = segments.slice(last + 1);
  const matches = partial
    .map((p) => ({
      path: rest.length > 0 ? join(p.path, ...rest) : p.path,
      name: p.names.join("/"),
    }))
    .sort((a, b) => (a.path < b.path ? -1 : 1));
  if (!existing) return matches;
  const there = await Promise.all(
    matches.map((m) =>
      lstat(m.path).then(
        () => true,
        () => false,
      ),
    ),
  );
  return matches.filter((_, i) => there[i]);
}
