/** The mediator's config file: defaults, and a clear CONFIG_INVALID for each mistake. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Discovery, expand, type Match } from "../../src/controller/discover.ts";
import { parseMediatorConfig } from "../../src/controller/mediator/config.ts";
import { isGuestlinkError } from "../../src/errors.ts";

const BASE = `listen: ["unix:/tmp/m.sock"]
pools:
  - name: gpu
    worker: { helper: [python3, w.py] }
`;

describe("the mediator's config", () => {
  it("fills in the defaults", () => {
    const c = parseMediatorConfig(BASE, "m.yaml");
    assert.deepEqual(c, {
      listen: [{ address: "unix:/tmp/m.sock", shared: false, name: undefined }],
      pools: [
        {
          name: "gpu",
          slots: 1,
          weights: [1],
          queueLimit: 1000,
          guestLimit: 1000,
          maxWaitMs: Number.POSITIVE_INFINITY,
          worker: { kind: "helper", argv: ["python3", "w.py"], cwd: undefined },
        },
      ],
      results: { keepMs: 600_000, max: 100_000, guestMax: 10_000 },
    });
    const three = parseMediatorConfig(`${BASE}    priorities: 3\n    max_wait: 30s\n`, "m.yaml");
    assert.deepEqual(three.pools[0]?.weights, [4, 2, 1]);
    assert.equal(three.pools[0]?.maxWaitMs, 30_000);
  });

  it("names the file, the key and what is wrong", () => {
    const cases: [string, RegExp][] = [
      ["listen: [\n", /^m\.yaml:\d+:\d+: not valid YAML/],
      ["pools: []\n", /^m\.yaml: listen: required/],
      [BASE.replace("gpu", "g p u"), /pools\[0\]\.name: use 1 to 64 letters/],
      [`${BASE}    slots: 0\n`, /pools\[0\]\.slots/],
      [
        `${BASE}    priorities: 2\n    weights: [3]\n`,
        /pools\[0\]\.weights: 1 weights for 2 priorities/,
      ],
      [`${BASE}    weights: [1, 0]\n`, /pools\[0\]\.weights\[1\]: a weight is a whole number/],
      [
        BASE.replace("{ helper: [python3, w.py] }", "{ helper: [a], command: [b] }"),
        /worker: give the worker either helper/,
      ],
      [
        BASE.replace("{ helper: [python3, w.py] }", "{ helper: [] }"),
        /worker\.helper: expected a list/,
      ],
      [`${BASE}    colour: red\n`, /pools\[0\]\.colour: unknown key/],
      [
        BASE.replace('"unix:/tmp/m.sock"', '"tcp:host:*"'),
        /listen\[0\]: only unix: and mailbox: paths may hold \*/,
      ],
      [BASE.replace('"unix:/tmp/m.sock"', '"nonsense"'), /listen\[0\]: /],
      [
        BASE.replace('["unix:/tmp/m.sock"]', '["unix:/a", "unix:/a"]'),
        /listen\[1\]: unix:\/a is listed twice/,
      ],
      [
        `${BASE}  - name: gpu\n    worker: { command: [x] }\n`,
        /pools\[1\]\.name: "gpu" is used twice/,
      ],
      [`${BASE}results: { keep: soon }\n`, /results\.keep: "soon" is not a duration/],
    ];
    for (const [text, pattern] of cases) {
      assert.throws(
        () => parseMediatorConfig(text, "m.yaml"),
        (e: unknown) => isGuestlinkError(e, "CONFIG_INVALID") && pattern.test(e.message),
        `${JSON.stringify(text)} should fail with ${pattern}`,
      );
    }
  });
});

describe("paths matching a pattern, found live", () => {
  it("matches folders up to the last * and appends the rest; the last segment matches anything", async () => {
    const dir = mkdtempSync(join(tmpdir(), "guestlink-discover-"));
    try {
      for (const vm of ["vm-1", "vm-2", ".hidden"]) mkdirSync(join(dir, vm));
      writeFileSync(join(dir, "not-a-folder"), "");
      writeFileSync(join(dir, "vm-1", "a.sock"), "");
      assert.deepEqual(await expand(`${dir}/*/mediator`), [
        { path: join(dir, "vm-1", "mediator"), name: "vm-1" },
        { path: join(dir, "vm-2", "mediator"), name: "vm-2" },
      ]);
      assert.deepEqual(await expand(`${dir}/vm-*/*.sock`), [
        { path: join(dir, "vm-1", "a.sock"), name: "1/a" },
      ]);
      assert.deepEqual(await expand(`${dir}/none/*/x`), []);

      const seen: string[] = [];
      const d = new Discovery(
        `${dir}/*/mediator`,
        {
          found: (m: Match) => {
            seen.push(`+${m.name}`);
          },
          lost: (m: Match) => {
            seen.push(`-${m.name}`);
          },
        },
        10,
      );
      await d.start();
      assert.deepEqual(seen, ["+vm-1", "+vm-2"]);
      mkdirSync(join(dir, "vm-3"));
      rmSync(join(dir, "vm-1"), { recursive: true });
      for (let i = 0; i < 200 && seen.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
      await d.stop();
      assert.deepEqual(seen.slice(2).sort(), ["+vm-3", "-vm-1"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
