/** The mediator's status as a table for people (`guestlink mediate` on a terminal). */
import type { MediatorStatus } from "./mediator.ts";

function ms(value: number | null): string {
  if (value === null) return "-";
  if (value < 1) return `${value.toFixed(2)}ms`;
  if (value < 1000) return `${value.toFixed(value < 10 ? 1 : 0)}ms`;
  return `${(value / 1000).toFixed(1)}s`;
}

/** Rows padded to their columns' widths, first column left-aligned, the rest right-aligned. */
function columns(rows: readonly (readonly string[])[], indent: string): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map(
    (row) =>
      indent +
      row
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join("  "),
  );
}

export function formatStatus(status: MediatorStatus, maxGuests = 20): string {
  const lines: string[] = [];
  for (const pool of status.pools) {
    lines.push(
      `pool ${pool.name}: ${pool.running} of ${pool.slots} slots running, ${pool.queued} queued`,
    );
    lines.push(
      ...columns(
        [
          [
            "level",
            "weight",
            "queued",
            "running",
            "done",
            "failed",
            "rejected",
            "cancelled",
            "wait p50",
            "wait p99",
            "oldest",
          ],
          ...pool.levels.map((l) => [
            String(l.priority),
            String(l.weight),
            String(l.queued),
            String(l.running),
            String(l.done),
            String(l.failed),
            String(l.rejected),
            String(l.cancelled),
            ms(l.waitP50Ms),
            ms(l.waitP99Ms),
            ms(l.oldestWaitingMs),
          ]),
        ],
        "  ",
      ),
    );
    if (pool.flows.length > 0) {
      const shown = [...pool.flows].sort((a, b) => b.submitted - a.submitted).slice(0, maxGuests);
      lines.push(
        ...columns(
          [
            ["guest", "submitted", "served", "rejected", "queued", "running"],
            ...shown.map((f) => [
              f.flow,
              String(f.submitted),
              String(f.served),
              String(f.rejected),
              String(f.queued),
              String(f.running),
            ]),
          ],
          "  ",
        ),
      );
      if (pool.flows.length > shown.length)
        lines.push(`  … and ${pool.flows.length - shown.length} more guests`);
    }
  }
  const connected = status.channels.reduce((n, c) => n + c.sessions, 0);
  lines.push(
    `listening on ${status.channels.length} channel${status.channels.length === 1 ? "" : "s"}, ${connected} session${connected === 1 ? "" : "s"}; ${status.kept} replies kept for their keys`,
  );
  return lines.join("\n");
}
