/**
 * Reading a YAML file people wrote (a fleet plan, a service's config): YAML's own errors with
 * their line and column, then the reader's first complaint with the key's path, each as one
 * line in the error the caller chooses (PLAN_INVALID, CONFIG_INVALID).
 */
import { createRequire } from "node:module";
import type { GuestlinkError, GuestlinkErrorOptions } from "../errors.ts";
import { CheckError } from "../fleet/check.ts";

export type InvalidFileError = new (
  message: string,
  options?: GuestlinkErrorOptions,
) => GuestlinkError;

/**
 * The YAML library, loaded the first time a file is read rather than with the CLI (it is a
 * quarter of what `guestlink exec` would otherwise load at start-up).
 */
function yaml(): typeof import("yaml") {
  const from = typeof __filename === "string" ? __filename : import.meta.url;
  return createRequire(from)("yaml") as typeof import("yaml");
}

/** Parses YAML `text` and reads it with `read`; `source` names the file in errors. */
export function readYaml<T>(
  text: string,
  source: string,
  read: (value: unknown) => T,
  Invalid: InvalidFileError,
): T {
  const doc = yaml().parseDocument(text, { uniqueKeys: true });
  const problem = doc.errors[0];
  if (problem !== undefined) {
    const where = problem.linePos?.[0];
    const at = where === undefined ? source : `${source}:${where.line}:${where.col}`;
    throw new Invalid(`${at}: not valid YAML: ${firstLine(problem.message)}`, {
      details: { source, line: where?.line, col: where?.col },
    });
  }
  try {
    return read(doc.toJS({ maxAliasCount: 100 }));
  } catch (err) {
    if (err instanceof CheckError) {
      throw new Invalid(`${source}: ${err.message}`, { details: { source, path: err.path } });
    }
    throw err;
  }
}

/** The yaml library's message without its own " at line L, column C:" and code excerpt. */
function firstLine(message: string): string {
  return (message.split("\n")[0] as string).replace(/ at line \d+, column \d+:?$/, "");
}
