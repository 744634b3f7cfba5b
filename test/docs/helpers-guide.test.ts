/**
 * The helper examples in docs/guides/helpers.md, run as written: each ```python and ```sh block
 * under a protocol's heading is saved to a file and spoken to with that protocol.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type HelperOptions, spawnHelper } from "../../src/controller/helpers/helper.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { requires } from "../helpers/requires.ts";

const GUIDE = readFileSync(
  fileURLToPath(new URL("../../docs/guides/helpers.md", import.meta.url)),
  "utf8",
);
const dir = mkdtempSync(join(tmpdir(), "guestlink-guide-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The code of the `lang` block in the section headed `### heading`. */
function example(heading: string, lang: string): string {
  const section = GUIDE.split(/^### /m).find((s) => s.startsWith(heading));
  assert.ok(section, `the guide has a section ${heading}`);
  const match = new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(section);
  assert.ok(match?.[1], `the section ${heading} has a ${lang} example`);
  return match[1];
}

function save(name: string, code: string): string {
  const path = join(dir, name);
  writeFileSync(path, code);
  chmodSync(path, 0o755);
  return path;
}

async function withHelper<T>(
  options: HelperOptions,
  use: (h: ReturnType<typeof spawnHelper>) => Promise<T>,
) {
  const helper = spawnHelper({ restart: false, ...options });
  try {
    return await use(helper);
  } finally {
    await helper.stop();
  }
}

describe("the helper guide's examples", () => {
  it("lines, in Python", { skip: requires("python3") }, async () => {
    const script = save("lines.py", example("`lines`", "python"));
    await withHelper({ command: "python3", args: [script] }, async (h) => {
      await h.send("hello");
      const { value } = await h.lines().next();
      assert.equal(value, "ok hello");
    });
  });

  it("lines, in shell", async () => {
    const script = save("lines.sh", example("`lines`", "sh"));
    await withHelper({ command: script }, async (h) => {
      await h.send("route 10.0.0.0/24");
      const { value } = await h.lines().next();
      assert.equal(value, "ok route 10.0.0.0/24");
    });
  });

  it("jsonrpc, in Python: requests, an error, a notification", {
    skip: requires("python3"),
  }, async () => {
    const script = save("rpc.py", example("`jsonrpc`", "python"));
    await withHelper({ command: "python3", args: [script], protocol: "jsonrpc" }, async (h) => {
      const said = new Promise<string>((resolve) =>
        h.onEvent((e) => {
          if (e.type === "stderr") resolve(e.line);
        }),
      );
      assert.equal(await h.request("sum", { a: 1, b: 2 }), 3);
      assert.equal(await h.request("upper", { text: "hi" }), "HI");
      await h.notify("hello");
      assert.equal(await said, "notified: hello");
      await assert.rejects(
        h.request("nope"),
        (e: unknown) =>
          isGuestlinkError(e, "REMOTE_ERROR") &&
          (e as unknown as { remoteCode: string }).remoteCode === "-32601",
      );
    });
  });

  it("jsonrpc, in shell", { skip: requires("jq") }, async () => {
    const script = save("rpc.sh", example("`jsonrpc`", "sh"));
    await withHelper({ command: script, protocol: "jsonrpc" }, async (h) => {
      assert.equal(await h.request("ping"), "pong");
      await assert.rejects(h.request("pong"), /no method pong/);
    });
  });
});
