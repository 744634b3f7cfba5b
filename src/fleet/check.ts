/**
 * Reading a plan or a config written by people: each value is taken from an object by key, with
 * its path kept (`stages[1].workload.io.size`), and the first thing wrong ends the read with one
 * line naming that path. Unknown keys are refused, so a typo is never quietly ignored.
 */
import { parseDuration, parseSize } from "./units.ts";

/** A plan or config that cannot be used as written; `path` says where (empty: the whole file). */
export class CheckError extends Error {
  readonly path: string;
  constructor(path: string, problem: string) {
    super(path === "" ? problem : `${path}: ${problem}`);
    this.path = path;
  }
}

function kind(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** One mapping being read: take its keys, then `done()` refuses any key not taken. */
export class Fields {
  readonly path: string;
  readonly #value: Record<string, unknown>;
  readonly #taken = new Set<string>();

  constructor(value: unknown, path: string) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new CheckError(path, `expected a mapping (key: value), got ${kind(value)}`);
    }
    this.path = path;
    this.#value = value as Record<string, unknown>;
  }

  at(key: string): string {
    return this.path === "" ? key : `${this.path}.${key}`;
  }

  has(key: string): boolean {
    return this.#value[key] !== undefined;
  }

  /** The raw value at `key` (undefined when absent), marked as known. */
  raw(key: string): unknown {
    this.#taken.add(key);
    return this.#value[key];
  }

  /** Refuses the keys nobody took. */
  done(): void {
    for (const key of Object.keys(this.#value)) {
      if (!this.#taken.has(key)) {
        const known = [...this.#taken].join(", ");
        throw new CheckError(this.at(key), `unknown key; expected one of: ${known}`);
      }
    }
  }

  string(key: string, fallback: undefined): string | undefined;
  string(key: string, fallback?: string): string;
  string(key: string, ...fallback: [string | undefined] | []): string | undefined {
    const value = this.raw(key);
    if (value === undefined) return this.#missing(key, fallback);
    if (typeof value !== "string" || value === "") {
      throw new CheckError(this.at(key), `expected a non-empty string, got ${kind(value)}`);
    }
    return value;
  }

  /** An integer in [min, max]; `fallback` when absent (required without one). */
  integer(key: string, min: number, max: number, fallback: undefined): number | undefined;
  integer(key: string, min: number, max: number, fallback?: number): number;
  integer(
    key: string,
    min: number,
    max: number,
    ...fallback: [number | undefined] | []
  ): number | undefined {
    const value = this.raw(key);
    if (value === undefined) return this.#missing(key, fallback);
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      throw new CheckError(
        this.at(key),
        `expected a whole number from ${min} to ${max}, got ${kind(value)}`,
      );
    }
    return value;
  }

  /** A duration in ms (`2s`, `500ms`, a number of ms). */
  duration(key: string, fallback: undefined): number | undefined;
  duration(key: string, fallback?: number): number;
  duration(key: string, ...fallback: [number | undefined] | []): number | undefined {
    const value = this.raw(key);
    if (value === undefined) return this.#missing(key, fallback);
    const parsed = parseDuration(value);
    if ("error" in parsed) throw new CheckError(this.at(key), parsed.error);
    return parsed.value;
  }

  /** A size in bytes (`64KiB`, `1MiB`, a number of bytes). */
  size(key: string, ...fallback: [number] | []): number {
    const value = this.raw(key);
    if (value === undefined) return this.#missing(key, fallback) as number;
    const parsed = parseSize(value);
    if ("error" in parsed) throw new CheckError(this.at(key), parsed.error);
    return parsed.value;
  }

  /** One of `choices`; `fallback` when absent (required without one). */
  oneOf<T extends string>(key: string, choices: readonly T[], fallback: undefined): T | undefined;
  oneOf<T extends string>(key: string, choices: readonly T[], fallback?: T): T;
  oneOf<T extends string>(
    key: string,
    choices: readonly T[],
    ...fallback: [T | undefined] | []
  ): T | undefined {
    const value = this.raw(key);
    if (value === undefined) return this.#missing(key, fallback);
    if (!choices.includes(value as T)) {
      throw new CheckError(
        this.at(key),
        `expected one of ${choices.join(", ")}, got ${kind(value)}`,
      );
    }
    return value as T;
  }

  /** `true` or `false`; `fallback` when absent. */
  boolean(key: string, fallback: boolean): boolean {
    const value = this.raw(key);
    if (value === undefined) return fallback;
    if (typeof value !== "boolean") {
      throw new CheckError(this.at(key), `expected true or false, got ${kind(value)}`);
    }
    return value;
  }

  /** A list, each item read by `item` with its own path. */
  list<T>(key: string, item: (value: unknown, path: string) => T, minItems = 0): T[] {
    const value = this.raw(key);
    const path = this.at(key);
    if (value === undefined && minItems === 0) return [];
    if (value === undefined) throw new CheckError(path, "required, but missing");
    if (!Array.isArray(value)) throw new CheckError(path, `expected a list, got ${kind(value)}`);
    if (value.length < minItems) {
      throw new CheckError(path, `expected at least ${minItems} item${minItems === 1 ? "" : "s"}`);
    }
    return value.map((v, i) => item(v, `${path}[${i}]`));
  }

  /** A nested mapping, read by `read`, or undefined when absent. */
  mapping<T>(key: string, read: (fields: Fields) => T): T | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const fields = new Fields(value, this.at(key));
    const result = read(fields);
    fields.done();
    return result;
  }

  #missing<T>(key: string, fallback: [T] | []): T {
    if (fallback.length === 0) throw new CheckError(this.at(key), "required, but missing");
    return fallback[0] as T;
  }
}

/** Reads `value` as a mapping with `read`, refusing unknown keys. */
export function readMapping<T>(value: unknown, path: string, read: (fields: Fields) => T): T {
  const fields = new Fields(value, path);
  const result = read(fields);
  fields.done();
  return result;
}
