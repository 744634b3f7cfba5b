/**
 * Read slabs from the slab addon (native/slab.c through src/platform/slabs.ts): memory the garbage
 * collector freed is handed out again, and memory anything in JavaScript still reaches never is.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { mock, test } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ADDON_BUILD_DIR } from "../../src/platform/native-addon.ts";
import {
  IDLE_TRIM_MS,
  newSlab,
  PLAIN_SLABS,
  SLAB_ADDON_ENV,
  SLAB_ADDON_FILE,
  slabStats,
  trimSlabs,
} from "../../src/platform/slabs.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SLAB = 1024 * 1024;

/** Why these tests cannot run here, or false; with GUESTLINK_TOOLS_REQUIRED=1 a missing addon fails. */
function addonMissing(): string | false {
  if (process.platform !== "linux") return "the slab addon is Linux only";
  if (existsSync(join(ROOT, ADDON_BUILD_DIR, SLAB_ADDON_FILE))) return false;
  const reason = `the slab addon is not built (node scripts/build-native.mjs)`;
  if (process.env.GUESTLINK_TOOLS_REQUIRED === "1") {
    throw new Error(`${reason}, and GUESTLINK_TOOLS_REQUIRED=1 says it must run here`);
  }
  return reason;
}
const skip = addonMissing();

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Collects until the addon's finalizers have run (Node may defer them to a later turn). */
async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    await turn();
  }
}

// Timers are mocked before the first slab from the addon, which starts the idle trim's interval.
mock.timers.enable({ apis: ["setInterval"] });

test("the first slabs of a process are Node's own: a short command never loads the addon", {
  skip,
}, () => {
  for (let i = 0; i < PLAIN_SLABS; i++) assert.equal(newSlab(SLAB).length, SLAB);
  assert.equal(slabStats(), undefined, "the addon was loaded for the first slabs");
  newSlab(SLAB);
  assert.notEqual(slabStats(), undefined, "the addon was not loaded after the first slabs");
});

test("a collected slab is handed out again; one still reached by a view or its ArrayBuffer never is", {
  skip,
}, async () => {
  trimSlabs();
  const viewed = newSlab(SLAB).fill(0xaa);
  const view = viewed.subarray(100, 200);
  const byBuffer = new Uint8Array(newSlab(SLAB).fill(0xbb).buffer);
  for (let i = 0; i < 16; i++) newSlab(SLAB).fill(0xcc);
  await collect();
  const before = slabStats();
  assert.ok(before !== undefined);
  assert.ok(
    before.freeBytes >= 16 * SLAB,
    `only ${before.freeBytes} bytes came back after a collection`,
  );

  const again = Array.from({ length: 32 }, () => newSlab(SLAB).fill(0x11));
  const after = slabStats();
  assert.ok(after !== undefined);
  assert.ok(
    after.reused - before.reused >= 16,
    `${after.reused - before.reused} slabs were reused, not 16`,
  );
  assert.ok(
    view.every((b) => b === 0xaa),
    "a slab still viewed was handed out and written over",
  );
  assert.ok(
    byBuffer.every((b) => b === 0xbb),
    "a slab reached through its ArrayBuffer was handed out again",
  );
  assert.equal(again.length, 32);
});

test("the free list is emptied when no slab was taken for a while", { skip }, async () => {
  trimSlabs();
  for (let i = 0; i < 8; i++) newSlab(SLAB);
  await collect();
  assert.ok((slabStats()?.freeBytes ?? 0) >= 8 * SLAB, "the slabs did not come back");
  // A slab was taken in this interval: the list stays for the next reader.
  mock.timers.tick(IDLE_TRIM_MS);
  assert.ok((slabStats()?.freeBytes ?? 0) >= 8 * SLAB, "the list was emptied while in use");
  // None taken through a whole interval: the memory goes back to the system.
  mock.timers.tick(IDLE_TRIM_MS);
  assert.equal(slabStats()?.freeBytes, 0);
  assert.equal(trimSlabs(), 0);
});

test(`${SLAB_ADDON_ENV}=off: every slab is Node's own`, () => {
  const out = execFileSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "-e",
      `import("./src/platform/slabs.ts").then(({ newSlab, slabStats }) => {
        for (let i = 0; i < 20; i++) newSlab(1024);
        console.log(JSON.stringify(slabStats() ?? null));
      })`,
    ],
    { cwd: ROOT, env: { ...process.env, [SLAB_ADDON_ENV]: "off" }, encoding: "utf8" },
  );
  assert.equal(out.trim(), "null");
});
