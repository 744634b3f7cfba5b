/**
 * Durations and sizes as people write them in plans and configs: `500ms`, `2s`, `5m`, `1h`;
 * `512`, `64KiB`, `1MiB`, `2GiB` (powers of 1024; `KB`/`MB`/`GB` are powers of 1000). A bare
 * number is milliseconds or bytes. Each parser returns the value, or a message saying what is
 * wrong (the caller adds where: `stages[1].timeout: …`).
 */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = {
  "": 1,
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
};
const NUMBER_WITH_UNIT = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/;

export type Parsed<T> = { value: T } | { error: string };

/** A duration in milliseconds: a non-negative number, or a string like `250ms`, `2s`, `1.5m`. */
export function parseDuration(input: unknown): Parsed<number> {
  if (typeof input === "number") {
    return Number.isFinite(input) && input >= 0
      ? { value: input }
      : { error: `${input} is not a duration: use a number of ms or e.g. "2s"` };
  }
  const m = typeof input === "string" ? NUMBER_WITH_UNIT.exec(input) : null;
  const unit = m === null ? undefined : DURATION_UNITS[m[2] === "" ? "ms" : (m[2] as string)];
  if (m === null || unit === undefined) {
    return {
      error: `${JSON.stringify(input)} is not a duration: write a number with ms, s, m or h (e.g. "30s")`,
    };
  }
  return { value: Math.round(Number(m[1]) * unit) };
}

/** A size in bytes: a non-negative integer, or a string like `64KiB`, `1MiB`, `10MB`. */
export function parseSize(input: unknown): Parsed<number> {
  const m =
    typeof input === "number"
      ? NUMBER_WITH_UNIT.exec(String(input))
      : typeof input === "string"
        ? NUMBER_WITH_UNIT.exec(input)
        : null;
  const unit = m === null ? undefined : SIZE_UNITS[m[2] as string];
  if (m === null || unit === undefined) {
    return {
      error: `${JSON.stringify(input)} is not a size: write bytes, or a number with KiB, MiB, GiB (1024s) or KB, MB, GB (1000s), e.g. "64KiB"`,
    };
  }
  const value = Number(m[1]) * unit;
  if (!Number.isSafeInteger(value)) {
    return { error: `${JSON.stringify(input)} is not a whole number of bytes` };
  }
  return { value };
}

/** Formats milliseconds the way `parseDuration` reads them back: `1.5s`, `250ms`, `2m`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ] as const) {
    if (ms >= size) return `${Number((ms / size).toFixed(3))}${unit}`;
  }
  return `${Number(ms.toFixed(3))}ms`;
}
