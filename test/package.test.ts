import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";

const read = (path: string): unknown =>
  JSON.parse(readFileSync(new URL(`../${path}`, import.meta.url), "utf8"));

it("every source native/binding.gyp builds is in the package (an install builds the addons)", () => {
  const { files } = read("package.json") as { files: string[] };
  const { targets } = read("native/binding.gyp") as { targets: { sources: string[] }[] };
  const sources = targets.flatMap((t) => t.sources.map((s) => `native/${s}`));
  assert.ok(sources.length >= 3, `binding.gyp lists ${sources.length} sources`);
  assert.deepEqual(
    sources.filter((s) => !files.includes(s)),
    [],
    "package.json's files leaves out what binding.gyp compiles",
  );
});
