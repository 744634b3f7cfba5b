import assert from "node:assert/strict";
import { it } from "node:test";
import { renderReport } from "../../src/controller/run/report.ts";
import type { RunSummary } from "../../src/controller/run/summary.ts";
import { newHistogram, recordMicros } from "../../src/fleet/histogram.ts";

it("renders one self-contained page: the outcome, tables and charts, nothing fetched, names escaped", () => {
  const h = newHistogram();
  for (let i = 1; i <= 1000; i++) recordMicros(h, i * 10);
  const op = {
    count: 1000,
    errors: 0,
    bytes: 0,
    opsPerSec: 500,
    mibPerSec: 0,
    latencyUs: {
      count: 1000,
      mean: 5000,
      min: 10,
      p50: 5000,
      p90: 9000,
      p95: 9500,
      p99: 9900,
      p999: 9990,
      max: 10000,
    },
  };
  const summary: RunSummary = {
    version: 1,
    name: "night<script>",
    outcome: "partial",
    exitCode: 2,
    reason: "stage main: the barrier (all) needs 2 of 2 agents, and 1 can go on",
    startedAt: "2026-12-07T00:00:00.000Z",
    endedAt: "2026-12-07T00:00:10.000Z",
    agents: [
      {
        id: "vm-1",
        address: "unix:/a",
        state: "COMPLETED",
        clock: { offsetMs: 1.5, uncertaintyMs: 0.2, rttMs: 0.4 },
        stages: [],
      },
      {
        id: "vm-2",
        address: "unix:/b",
        state: "FAILED",
        reason: "its session was lost: <gone>",
        stages: [],
      },
    ],
    stages: [
      {
        name: "main",
        startAt: "2026-12-07T00:00:01.000Z",
        startSpreadMs: 0.4,
        agents: 2,
        completed: 1,
        operations: { read: op },
      },
    ],
    thresholds: [
      { threshold: "p99 < 20ms", stage: "main", operation: "read", value: 9900, ok: true },
    ],
  };
  const ticks = [1, 2, 3].map((t) => ({
    stage: "main",
    t,
    opsPerSec: 500 + t,
    mibPerSec: 0,
    p99Us: 9900,
  }));
  const html = renderReport(summary, ticks, new Map([["main read", h]]));
  assert.match(html, /^<!doctype html>/);
  assert.doesNotMatch(html, /<script|src=|href=|https?:\/\//i, "nothing to run or fetch");
  assert.match(html, /night&lt;script&gt;/);
  assert.match(html, /its session was lost: &lt;gone&gt;/);
  assert.match(html, /<b class="bad">partial<\/b> \(exit 2\)/);
  assert.equal(
    (html.match(/<svg /g) ?? []).length,
    4,
    "throughput (ops, MiB), p99 over time, percentiles",
  );
  assert.equal((html.match(/<polyline /g) ?? []).length, 4);
  assert.match(html, /<td>main<\/td><td>read<\/td><td>1000<\/td>/);
  assert.match(html, /1\.5 ± 0\.20 ms/);
});
