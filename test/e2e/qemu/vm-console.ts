/** The guest's serial console as the harness keeps it: lines, a bounded tail, listeners. */

/** Lines kept; older ones are dropped (a guest can print without end). */
const CONSOLE_LINES_KEPT = 5_000;

/** What the guest printed on its serial console, line by line. */
export class VmConsole {
  readonly #lines: string[] = [];
  #partial = "";
  readonly #listeners = new Set<(line: string) => void>();

  /** @internal fed by the harness with QEMU's stdout. */
  push(chunk: string): void {
    const parts = (this.#partial + chunk).split(/\r?\n/);
    this.#partial = parts.pop() ?? "";
    for (const line of parts) this.#add(line);
  }

  /** @internal the partial last line, once QEMU has exited. */
  flush(): void {
    if (this.#partial) this.#add(this.#partial);
    this.#partial = "";
  }

  #add(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > CONSOLE_LINES_KEPT) {
      this.#lines.shift();
    }
    for (const l of this.#listeners) l(line);
  }

  get lines(): readonly string[] {
    return this.#lines;
  }

  get text(): string {
    return this.#lines.join("\n");
  }

  /** The last `n` lines, indented, for error messages. */
  tail(n = 30): string {
    const lines = this.#lines.slice(-n);
    return lines.length === 0
      ? "  (nothing on the console)"
      : lines.map((l) => `  | ${l}`).join("\n");
  }

  /** Calls `listener` with every line from now on; returns a function that stops it. */
  onLine(listener: (line: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The first line so far that matches. */
  find(pattern: RegExp): RegExpExecArray | undefined {
    for (const line of this.#lines) {
      const m = pattern.exec(line);
      if (m) return m;
    }
    return undefined;
  }
}
