// The mediator's worker for bench/mediator.bench.ts: a JSON-RPC 2.0 helper over stdio (NDJSON),
// plain Node as a user's worker would be. `run` answers {input, guest, priority} (the trivial
// work the benchmark's direct handler does too), one write per answer.
import { createInterface } from "node:readline";

createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY }).on(
  "line",
  (line) => {
    const m = JSON.parse(line);
    if (m.id === undefined) return;
    if (m.method !== "run") {
      process.stdout.write(
        `${JSON.stringify({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: `no method ${m.method}` } })}\n`,
      );
      return;
    }
    const { input, guest, priority } = m.params;
    process.stdout.write(
      `${JSON.stringify({ jsonrpc: "2.0", id: m.id, result: { input, guest, priority } })}\n`,
    );
  },
);
