import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { secureRandomBytes } from "../../src/platform/random.ts";

describe("secureRandomBytes", () => {
  it("gives as many bytes as asked, different each time", () => {
    for (const count of [0, 1, 12, 16, 100, 70000]) {
      assert.equal(secureRandomBytes(count).length, count);
    }
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) seen.add(secureRandomBytes(16).toString("hex"));
    assert.equal(seen.size, 100);
  });

  it("never hands out the same bytes twice, across many refills of its pool, and each draw is a copy", () => {
    const seen = new Set<string>();
    const draws = Array.from({ length: 2000 }, () => secureRandomBytes(16));
    for (const draw of draws) seen.add(draw.toString("hex"));
    assert.equal(seen.size, draws.length);
    // Changing a draw changes no other (none shares memory with the pool or another draw).
    const before = draws.map((d) => d.toString("hex"));
    for (const draw of draws) draw.fill(0);
    const again = Array.from({ length: 10 }, () => secureRandomBytes(16).toString("hex"));
    assert.ok(again.every((hex) => !before.includes(hex) && hex !== "0".repeat(32)));
  });

  it("uses every byte value (not a constant or a short cycle)", () => {
    const counts = new Array<number>(256).fill(0);
    for (const byte of secureRandomBytes(64 * 1024)) counts[byte] = (counts[byte] ?? 0) + 1;
    assert.ok(counts.every((n) => n > 0));
  });
});
