/**
 * A short, fixed-time run of the fuzzer (scripts/fuzz.ts; `npm run fuzz -- --minutes N` for long
 * ones) against a real agent, mediator and daemon: no crash, no unbounded memory, each still
 * serving a client. Its figures are printed. And the replay of a saved input: one that does not
 * fail says so and exits 0.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { inputToJson, makeInput } from "../../scripts/fuzz-inputs.ts";
import { assertBuilt } from "../helpers/bin.ts";

const FUZZ = fileURLToPath(new URL("../../scripts/fuzz.ts", import.meta.url));
/** Seconds the test's run lasts (the three targets are fed at once). */
const SECONDS = 15;

function fuzz(args: string[]): Promise<{ code: number | null; out: string }> {
  assertBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", FUZZ, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

describe("the fuzzer", { timeout: 300_000 }, () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-fuzz-test-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it(`feeds an agent, the mediator and the daemon for ${SECONDS} s: no crash, memory bounded, each still serving`, async (t) => {
    const seed = Number(process.env.GUESTLINK_SEED ?? 20);
    const out = join(dir, "failures");
    const r = await fuzz(["--seconds", String(SECONDS), "--seed", String(seed), "--out", out]);
    for (const line of r.out.trim().split("\n")) t.diagnostic(line);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /no failure in \d+ s/);
    for (const target of ["agent", "mediator", "daemon"]) {
      const m = new RegExp(`fuzz: ${target}: (\\d+) inputs`).exec(r.out);
      assert.ok(m && Number(m[1]) > 100, `the ${target} got inputs: ${r.out}`);
    }
    // A run that found nothing saves nothing.
    await assert.rejects(readdir(out));
  });

  it("replays a saved input, saying whether it still fails", async () => {
    const file = join(dir, "agent-input.json");
    const input = makeInput(7, 3, {
      idParity: 1,
      methods: [["ping", {}]],
    });
    await writeFile(
      file,
      JSON.stringify({ target: "agent", reason: "(a test)", inputs: [inputToJson(input)] }),
    );
    const r = await fuzz(["--replay", file]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /replaying .* 1 input\(s\) to a fresh agent/);
    assert.match(r.out, /it no longer fails/);
  });
});
