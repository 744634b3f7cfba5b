/** The JSON-RPC peer on its own: lines in, lines out, no process (seeded properties). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { JsonRpcPeer } from "../../src/controller/helpers/jsonrpc.ts";
import { LineSplitter } from "../../src/controller/helpers/lines.ts";
import { isGuestlinkError } from "../../src/errors.ts";

/** A peer whose written lines are kept, and what it reports. */
function peer() {
  const written: Record<string, unknown>[] = [];
  const strays: { line: string; reason: string }[] = [];
  const notifications: { method: string; params: unknown }[] = [];
  const rpc = new JsonRpcPeer(
    async (line) => {
      assert.ok(!line.includes("\n"), "one message per line");
      written.push(JSON.parse(line));
    },
    {
      stray: (line, reason) => strays.push({ line, reason }),
      notification: (method, params) => notifications.push({ method, params }),
      handlerFailed: () => {},
    },
  );
  return { rpc, written, strays, notifications };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("the JSON-RPC peer", () => {
  it("matches every answer to its request, whatever the order, batching, stray lines and split points", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 40 }),
        fc.infiniteStream(fc.integer({ min: 0, max: 1_000_000 })),
        fc.array(
          fc.string({ maxLength: 20 }).map((s) => `log: ${s.replaceAll("\n", " ")}`),
          {
            maxLength: 8,
          },
        ),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
        async (count, random, strayLines, chunkSizes) => {
          const { rpc, written, strays } = peer();
          const results = Array.from({ length: count }, (_, i) =>
            rpc.request("work", { n: i }).then(
              (value) => ({ ok: value }),
              (err: unknown) => ({ err }),
            ),
          );
          await tick();
          assert.equal(rpc.outstanding, count);
          // The helper answers in a shuffled order; some as errors; some grouped in batches.
          const asked = written.map((m) => m as { id: number; params: { n: number } });
          const shuffled = [...asked];
          const rand = random[Symbol.iterator]();
          const next = () => rand.next().value as number;
          for (let i = shuffled.length - 1; i > 0; i--) {
            const j = next() % (i + 1);
            [shuffled[i], shuffled[j]] = [
              shuffled[j] as (typeof asked)[0],
              shuffled[i] as (typeof asked)[0],
            ];
          }
          const answer = (m: (typeof asked)[0]) =>
            m.params.n % 5 === 3
              ? { jsonrpc: "2.0", id: m.id, error: { code: 1000 + m.params.n, message: "odd one" } }
              : { jsonrpc: "2.0", id: m.id, result: { twice: m.params.n * 2 } };
          const lines: string[] = [];
          let strayAt = 0;
          for (let i = 0; i < shuffled.length; ) {
            if (strayAt < strayLines.length && next() % 3 === 0)
              lines.push(strayLines[strayAt++] as string);
            const batch = 1 + (next() % 3);
            const group = shuffled.slice(i, i + batch).map(answer);
            i += batch;
            lines.push(JSON.stringify(group.length > 1 ? group : group[0]));
          }
          while (strayAt < strayLines.length) lines.push(strayLines[strayAt++] as string);
          // ...and its output reaches us in pieces of random sizes.
          const bytes = Buffer.from(`${lines.join("\n")}\n`);
          const splitter = new LineSplitter(1 << 20, {
            line: (l) => rpc.receive(l),
            tooLong: () => assert.fail("no line is too long here"),
          });
          for (let at = 0, k = 0; at < bytes.length; k++) {
            const size = chunkSizes[k % chunkSizes.length] as number;
            splitter.push(bytes.subarray(at, at + size));
            at += size;
          }
          splitter.end();
          const settled = await Promise.all(results);
          settled.forEach((r, n) => {
            if (n % 5 === 3) {
              const err = (r as { err: unknown }).err;
              assert.ok(isGuestlinkError(err, "REMOTE_ERROR"), String(err));
              assert.equal((err as unknown as { remoteCode: string }).remoteCode, String(1000 + n));
            } else {
              assert.deepEqual(r, { ok: { twice: n * 2 } });
            }
          });
          assert.equal(rpc.outstanding, 0);
          assert.deepEqual(
            strays.map((s) => s.line),
            strayLines,
          );
        },
      ),
      { seed: 0x16, numRuns: 150 },
    );
  });

  it("answers the other side's requests, a batch with a batch, and an unknown method with -32601", async () => {
    const { rpc, written } = peer();
    rpc.handle("double", (p) => (p as number) * 2);
    rpc.handle("boom", () => {
      throw Object.assign(new Error("bad input"), { code: 7 });
    });
    rpc.handle("coded", () => {
      throw Object.assign(new Error("no such file"), { code: "ENOENT" });
    });
    rpc.receive('{"jsonrpc":"2.0","id":"a","method":"double","params":21}');
    rpc.receive('{"jsonrpc":"2.0","id":1,"method":"boom"}');
    rpc.receive('{"jsonrpc":"2.0","id":2,"method":"coded"}');
    rpc.receive('{"jsonrpc":"2.0","id":3,"method":"missing"}');
    rpc.receive(
      '[{"jsonrpc":"2.0","id":4,"method":"double","params":1},{"jsonrpc":"2.0","method":"double","params":9},{"jsonrpc":"2.0","id":5,"method":"double","params":2}]',
    );
    rpc.receive('{"jsonrpc":"2.0","id":{"x":1},"method":"double"}');
    await tick();
    await tick();
    // Answers go out as each handler finishes: compare regardless of order.
    const byText = (ms: unknown[]) => ms.map((m) => JSON.stringify(m)).sort();
    assert.deepEqual(
      byText(written),
      byText([
        { jsonrpc: "2.0", id: "a", result: 42 },
        { jsonrpc: "2.0", id: 1, error: { code: 7, message: "bad input" } },
        {
          jsonrpc: "2.0",
          id: 2,
          error: { code: -32000, message: "no such file", data: { code: "ENOENT" } },
        },
        {
          jsonrpc: "2.0",
          id: 3,
          error: {
            code: -32601,
            message: "no handler for missing",
            data: { available: ["double", "boom", "coded"] },
          },
        },
        {
          jsonrpc: "2.0",
          id: null,
          error: { code: -32600, message: "id must be a string or number" },
        },
        [
          { jsonrpc: "2.0", id: 4, result: 2 },
          { jsonrpc: "2.0", id: 5, result: 4 },
        ],
      ]),
    );
  });

  it("reports what is not JSON-RPC 2.0 and goes on", async () => {
    const { rpc, strays, notifications } = peer();
    for (const line of [
      "hello",
      "42",
      "[]",
      '{"id":1,"result":2}',
      '{"jsonrpc":"2.0"}',
      '{"jsonrpc":"2.0","id":99,"result":1}',
    ]) {
      rpc.receive(line);
    }
    rpc.receive('{"jsonrpc":"2.0","method":"progress","params":[1]}');
    assert.deepEqual(
      strays.map((s) => s.reason),
      [
        "not JSON",
        "not a JSON-RPC object",
        "an empty batch",
        'no "jsonrpc": "2.0"',
        "neither a request, a notification nor an answer",
        "an answer to no request waiting for one",
      ],
    );
    assert.deepEqual(notifications, [{ method: "progress", params: [1] }]);
  });

  it("fails every waiting request, and aborts the handlers serving, when the other side is gone", async () => {
    const { rpc, written } = peer();
    let aborted: unknown;
    rpc.handle(
      "wait",
      (_p, ctx) =>
        new Promise((_r, reject) => {
          ctx.signal.addEventListener("abort", () => {
            aborted = ctx.signal.reason;
            reject(ctx.signal.reason);
          });
        }),
    );
    const a = rpc.request("x");
    const b = rpc.request("y");
    rpc.receive('{"jsonrpc":"2.0","id":"s","method":"wait"}');
    const gone = new Error("gone");
    rpc.failAll(gone);
    await assert.rejects(a, (e) => e === gone);
    await assert.rejects(b, (e) => e === gone);
    await tick();
    assert.equal(aborted, gone);
    // No answer is written for a request served when the other side is gone.
    assert.deepEqual(
      written.map((m) => m.method),
      ["x", "y"],
    );
    assert.equal(rpc.outstanding, 0);
  });
});
