import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { ERROR_CODES, GuestlinkError, isGuestlinkError } from "../src/errors.ts";

describe("error catalogue", () => {
  it("documents every code in docs/errors.md, and documents no code that does not exist", () => {
    const doc = readFileSync(new URL("../docs/errors.md", import.meta.url), "utf8");
    const documented = [...doc.matchAll(/^## ([A-Z_]+)$/gm)].map((m) => m[1]);
    assert.deepEqual([...documented].sort(), Object.keys(ERROR_CODES).sort());
  });

  it("keeps code, cause and details, and names the subclass", () => {
    const cause = new Error("root");
    const err = new GuestlinkError("INVALID_OPTION", "bad", { cause, details: { option: "x" } });
    assert.equal(err.code, "INVALID_OPTION");
    assert.equal(err.cause, cause);
    assert.deepEqual(err.details, { option: "x" });
    assert.equal(err.name, "GuestlinkError");
    assert.ok(isGuestlinkError(err, "INVALID_OPTION"));
    assert.ok(!isGuestlinkError(err, "INVALID_FRAME"));
    assert.ok(!isGuestlinkError(new Error("x")));
  });
});
