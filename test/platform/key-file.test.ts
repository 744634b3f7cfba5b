/**
 * Key files (platform/key-file.ts) and `key_file:` where a config names a tcp: address: a fleet
 * plan's agents, `guestlink serve`'s agents and the mediator's listen entries.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseMediatorConfig } from "../../src/controller/mediator/config.ts";
import { parsePlan } from "../../src/controller/run/plan.ts";
import { readServeConfig } from "../../src/daemon/config.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { parseKeyText, readKeyFile, writeNewKeyFile } from "../../src/platform/key-file.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-key-"));
});
after(() => rm(dir, { recursive: true, force: true }));

const code = (c: string) => (err: unknown) => isGuestlinkError(err) && err.code === c;

describe("key files", () => {
  it("writes 64 hex digits with mode 0600 and reads them back; never overwrites", async () => {
    const path = join(dir, "k");
    await writeNewKeyFile(path);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const key = await readKeyFile(path);
    assert.equal(key.length, 32);
    await assert.rejects(writeNewKeyFile(path), code("INVALID_OPTION"));
    assert.deepEqual(await readKeyFile(path), key);
  });

  it("refuses a file that is not one key, and a missing file, as INVALID_OPTION", async () => {
    const bad = join(dir, "bad");
    await writeFile(bad, "not a key\n");
    await assert.rejects(readKeyFile(bad), /is not a guestlink key .*guestlink keygen FILE/);
    await assert.rejects(readKeyFile(join(dir, "none")), /cannot read key file .*ENOENT/);
    assert.throws(() => parseKeyText("ab".repeat(31), "x"), code("INVALID_OPTION"));
    assert.equal(parseKeyText(` ${"AB".repeat(32)}\n`, "x")[0], 0xab);
  });
});

describe("key_file in configs", () => {
  it("a fleet plan's agent takes key_file for tcp: only", () => {
    const plan = (agent: string) =>
      parsePlan(
        `name: m\nagents: [${agent}]\nstages: [{name: s, workload: {io: {dir: /d, op: stat}}}]\n`,
        "m.yaml",
      );
    assert.equal(
      plan("{id: a, address: 'tcp:10.0.0.2:7070', key_file: /k}").agents[0]?.keyFile,
      "/k",
    );
    assert.throws(
      () => plan("{id: a, address: 'unix:/a.sock', key_file: /k}"),
      /agents\[0\]\.key_file: a key applies to tcp: addresses only/,
    );
  });

  it("guestlink serve's agents take key_file for tcp: only", () => {
    const c = readServeConfig({
      agents: [{ id: "a", address: "tcp:10.0.0.2:7070", key_file: "/k" }],
    });
    assert.equal(c.agents[0]?.keyFile, "/k");
    assert.throws(
      () => readServeConfig({ agents: [{ id: "a", address: "unix:/a.sock", key_file: "/k" }] }),
      /agents\[0\]\.key_file/,
    );
  });

  it("the mediator's listen entries take key_file for tcp: only", () => {
    const pools = "pools:\n  - name: gpu\n    worker: { helper: [python3, w.py] }\n";
    const c = parseMediatorConfig(
      `listen: [{address: "tcp:0.0.0.0:7300", key_file: /k}]\n${pools}`,
      "m.yaml",
    );
    assert.equal(c.listen[0]?.keyFile, "/k");
    assert.throws(
      () =>
        parseMediatorConfig(
          `listen: [{address: "unix:/m.sock", key_file: /k}]\n${pools}`,
          "m.yaml",
        ),
      /listen\[0\]\.key_file/,
    );
  });
});
