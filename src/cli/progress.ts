/** A progress bar on stderr, drawn only when stderr is a terminal, at most ten times a second. */
import { formatBytes } from "./common.ts";

export class Progress {
  readonly #label: string;
  readonly #enabled: boolean;
  readonly #start = performance.now();
  #lastDraw = 0;

  constructor(label: string, enabled = Boolean(process.stderr.isTTY)) {
    this.#label = label;
    this.#enabled = enabled;
  }

  update(bytes: number, total?: number): void {
    if (!this.#enabled) return;
    const now = performance.now();
    if (now - this.#lastDraw < 100 && bytes !== total) return;
    this.#lastDraw = now;
    const rate = bytes / Math.max(0.001, (now - this.#start) / 1000);
    const width = 30;
    const fraction = total ? Math.min(1, bytes / total) : 0;
    const bar = total
      ? `[${"#".repeat(Math.round(fraction * width)).padEnd(width, ".")}] ${(fraction * 100).toFixed(0).padStart(3)}% `
      : "";
    const size = total ? `${formatBytes(bytes)} / ${formatBytes(total)}` : formatBytes(bytes);
    process.stderr.write(`\r${this.#label} ${bar}${size}  ${formatBytes(rate)}/s\u001b[K`);
  }

  done(): void {
    if (this.#enabled) process.stderr.write("\n");
  }
}
