/**
 * docs/guides/mediator.md as written: its Python worker and its config, with the paths moved
 * into a temporary folder, a guest submitting as the guide says, and `mediate` refusing a bad
 * config with exit 5.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseMediatorConfig } from "../../src/controller/mediator/config.ts";
import { Mediator } from "../../src/controller/mediator/mediator.ts";
import { submitWork } from "../../src/controller/mediator/submit.ts";
import { openSession } from "../../src/platform/session.ts";
import { runCli } from "../helpers/cli.ts";
import { requires } from "../helpers/requires.ts";

const GUIDE = readFileSync(
  fileURLToPath(new URL("../../docs/guides/mediator.md", import.meta.url)),
  "utf8",
);

function block(lang: string): string {
  const match = new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(GUIDE);
  assert.ok(match?.[1], `the guide has a ${lang} block`);
  return match[1];
}

describe("the mediator guide's seed scenario", () => {
  it("runs its Python worker behind its config, and a VM's submit gets the answer", {
    skip: requires("python3"),
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "guestlink-mediator-guide-"));
    try {
      writeFileSync(join(dir, "worker.py"), block("python"));
      mkdirSync(join(dir, "vms", "vm-1"), { recursive: true });
      const yaml = block("yaml")
        .replaceAll("/srv/vms", join(dir, "vms"))
        .replaceAll("/opt/mediator/worker.py", join(dir, "worker.py"));
      const mediator = await Mediator.start(parseMediatorConfig(yaml, "mediator.yaml"));
      try {
        const session = await openSession(`mailbox:${join(dir, "vms", "vm-1", "mediator")}`);
        const r = await submitWork(
          session,
          "A",
          { a: 780, b: 456 },
          { priority: 1, key: "req-17" },
        );
        assert.deepEqual(r, { sum: 1236, pool: "A", guest: "vm-1" });
        await assert.rejects(submitWork(session, "B", { a: 1 }), /WORKER_FAILED|'b'/);
        await session.close();
      } finally {
        await mediator.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("mediate refuses a config it cannot use: one line naming the key, exit 5, nothing started", async () => {
    const dir = mkdtempSync(join(tmpdir(), "guestlink-mediator-bad-"));
    try {
      const config = join(dir, "m.yaml");
      writeFileSync(
        config,
        'listen: ["unix:/tmp/x.sock"]\npools:\n  - name: A\n    slots: many\n    worker: { helper: [x] }\n',
      );
      const r = await runCli(["mediate", "--config", config]);
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /m\.yaml: pools\[0\]\.slots: .*\[CONFIG_INVALID\]/);
      assert.equal(r.stderr.trim().split("\n").length, 1);
      const missing = await runCli(["mediate", "--config", join(dir, "nope.yaml")]);
      assert.equal(missing.code, 5, missing.stderr);
      assert.match(missing.stderr, /nope\.yaml: cannot read it \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
