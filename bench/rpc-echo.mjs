// A JSON-RPC 2.0 echo server over stdio (NDJSON) for bench/helpers.bench.ts: plain Node, no
// imports from the project, as a user's helper would be. Each request is answered with its
// params as the result, one write per answer; notifications get no answer.
import { createInterface } from "node:readline";

createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY }).on(
  "line",
  (line) => {
    const m = JSON.parse(line);
    if (m.id === undefined) return;
    process.stdout.write(
      `${JSON.stringify({ jsonrpc: "2.0", id: m.id, result: m.params ?? null })}\n`,
    );
  },
);
