/**
 * `report.html`: one self-contained page (inline SVG and CSS, no script, nothing fetched) with
 * the run's outcome, a table per stage, throughput over time and latency by percentile.
 */
import type { Histogram } from "../../fleet/histogram.ts";
import type { RunSummary } from "./summary.ts";

/** The merged throughput of one live tick. */
export interface TickPoint {
  stage: string;
  /** Seconds since the run started. */
  t: number;
  opsPerSec: number;
  mibPerSec: number;
  p99Us: number;
}

const W = 720;
const H = 260;
const PAD = { left: 64, right: 16, top: 16, bottom: 40 };
const COLORS = [
  "#2b6cb0",
  "#c05621",
  "#2f855a",
  "#6b46c1",
  "#b7791f",
  "#c53030",
  "#319795",
  "#4a5568",
];

const esc = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string,
  );

interface Series {
  name: string;
  points: [number, number][];
}

/** A line chart; `logX` plots x as given (already transformed), labels from `xLabel`. */
function chart(
  title: string,
  series: Series[],
  xLabel: (x: number) => string,
  xTicks: number[],
  yUnit: string,
  logY = false,
): string {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<h3>${esc(title)}</h3><p class="none">no data</p>`;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => (logY ? Math.log10(Math.max(1, p[1])) : p[1]));
  const [x0, x1] = [Math.min(...xs, ...xTicks), Math.max(...xs, ...xTicks)];
  const y0 = logY ? Math.floor(Math.min(...ys)) : 0;
  const y1 = Math.max(logY ? Math.ceil(Math.max(...ys)) : Math.max(...ys) * 1.1, y0 + 1e-9);
  const px = (x: number) => PAD.left + ((x - x0) / (x1 - x0 || 1)) * (W - PAD.left - PAD.right);
  const py = (y: number) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const yTicks = logY
    ? Array.from({ length: y1 - y0 + 1 }, (_, i) => y0 + i)
    : Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  const yText = (y: number) => {
    const v = logY ? 10 ** y : y;
    return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2);
  };
  const parts = [
    `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`,
    `<rect x="${PAD.left}" y="${PAD.top}" width="${W - PAD.left - PAD.right}" height="${H - PAD.top - PAD.bottom}" class="plot"/>`,
    ...yTicks.map(
      (y) =>
        `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${py(y)}" y2="${py(y)}" class="grid"/><text x="${PAD.left - 6}" y="${py(y) + 4}" text-anchor="end">${yText(y)}</text>`,
    ),
    ...xTicks.map(
      (x) =>
        `<line x1="${px(x)}" x2="${px(x)}" y1="${PAD.top}" y2="${H - PAD.bottom}" class="grid"/><text x="${px(x)}" y="${H - PAD.bottom + 16}" text-anchor="middle">${esc(xLabel(x))}</text>`,
    ),
    `<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">${esc(yUnit)}</text>`,
    ...series.map((s, i) => {
      const d = s.points
        .map(
          ([x, y]) => `${px(x).toFixed(1)},${py(logY ? Math.log10(Math.max(1, y)) : y).toFixed(1)}`,
        )
        .join(" ");
      return `<polyline points="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`;
    }),
    "</svg>",
  ];
  const legend = series
    .map(
      (s, i) =>
        `<span class="key"><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`,
    )
    .join(" ");
  return `<h3>${esc(title)}</h3>${parts.join("")}<div class="legend">${legend}</div>`;
}

/** Percentiles as "nines": 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 … */
const nines = (p: number) => -Math.log10(1 - p / 100);
const NINES_LABELS = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
const PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999];

function fmtUs(us: number): string {
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (us >= 1e3) return `${(us / 1e3).toFixed(2)} ms`;
  return `${us.toFixed(0)} µs`;
}

export function renderReport(
  summary: RunSummary,
  ticks: readonly TickPoint[],
  histograms: ReadonlyMap<string, Histogram>,
): string {
  const stageRows = summary.stages.flatMap((s) =>
    Object.entries(s.operations).map(
      ([op, r]) =>
        `<tr><td>${esc(s.name)}</td><td>${esc(op)}</td><td>${r.count}</td><td>${r.errors}</td><td>${r.opsPerSec.toFixed(1)}</td><td>${r.mibPerSec.toFixed(2)}</td><td>${fmtUs(r.latencyUs.p50)}</td><td>${fmtUs(r.latencyUs.p99)}</td><td>${fmtUs(r.latencyUs.p999)}</td><td>${fmtUs(r.latencyUs.max)}</td></tr>`,
    ),
  );
  const agentRows = summary.agents.map(
    (a) =>
      `<tr><td>${esc(a.id)}</td><td class="${a.state === "COMPLETED" ? "ok" : "bad"}">${esc(a.state)}</td><td>${a.clock ? `${a.clock.offsetMs.toFixed(1)} ± ${a.clock.uncertaintyMs.toFixed(2)} ms` : "—"}</td><td>${esc(a.reason ?? "")}</td></tr>`,
  );
  const stages = [...new Set(ticks.map((t) => t.stage))];
  const byStage = (value: (t: TickPoint) => number): Series[] =>
    stages.map((stage) => ({
      name: stage,
      points: ticks
        .filter((t) => t.stage === stage)
        .map((t) => [t.t, value(t)] as [number, number]),
    }));
  const maxT = Math.max(1, ...ticks.map((t) => t.t));
  const tTicks = Array.from({ length: 6 }, (_, i) => Math.round((maxT * i) / 5));
  const latency: Series[] = [...histograms].map(([name, h]) => ({
    name,
    points: PERCENTILES.map((p) => [nines(p), h.getValueAtPercentile(p)] as [number, number]),
  }));
  const thresholds = summary.thresholds
    .map(
      (c) =>
        `<tr><td>${esc(c.threshold)}</td><td>${esc(c.stage)}</td><td>${esc(c.operation)}</td><td>${c.value.toFixed(1)}</td><td class="${c.ok ? "ok" : "bad"}">${c.ok ? "holds" : "crossed"}</td></tr>`,
    )
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(summary.name)}: guestlink run</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1a202c;max-width:980px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 10px;border-bottom:1px solid #e2e8f0;text-align:right}
td:first-child,th:first-child,td:nth-child(2){text-align:left}.ok{color:#2f855a}.bad{color:#c53030}
svg text{font-size:11px;fill:#4a5568}.plot{fill:#f7fafc;stroke:#cbd5e0}.grid{stroke:#e2e8f0}
.legend .key{margin-right:14px}.legend i{display:inline-block;width:12px;height:3px;margin:0 4px 3px 0}.none{color:#718096}
</style></head><body>
<h1>${esc(summary.name)}</h1>
<p>Outcome: <b class="${summary.exitCode === 0 ? "ok" : "bad"}">${esc(summary.outcome)}</b> (exit ${summary.exitCode})${summary.reason ? ` — ${esc(summary.reason)}` : ""}<br>
${esc(summary.startedAt)} to ${esc(summary.endedAt)}</p>
<h2>Stages, all agents merged</h2>
<table><tr><th>stage</th><th>operation</th><th>count</th><th>errors</th><th>ops/s</th><th>MiB/s</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th></tr>${stageRows.join("")}</table>
<table><tr><th>stage</th><th>start spread</th><th>agents</th><th>completed</th></tr>${summary.stages
    .map(
      (s) =>
        `<tr><td>${esc(s.name)}</td><td>${s.startSpreadMs === null ? "—" : `${s.startSpreadMs.toFixed(3)} ms`}</td><td>${s.agents}</td><td>${s.completed}</td></tr>`,
    )
    .join("")}</table>
<h2>Agents</h2>
<table><tr><th>agent</th><th>state</th><th>clock offset</th><th>why</th></tr>${agentRows.join("")}</table>
${thresholds ? `<h2>Thresholds</h2><table><tr><th>threshold</th><th>stage</th><th>operation</th><th>measured</th><th></th></tr>${thresholds}</table>` : ""}
<h2>Over time</h2>
${chart(
  "Throughput, operations per second",
  byStage((t) => t.opsPerSec),
  (x) => `${x}s`,
  tTicks,
  "ops/s",
)}
${chart(
  "Throughput, MiB per second",
  byStage((t) => t.mibPerSec),
  (x) => `${x}s`,
  tTicks,
  "MiB/s",
)}
${chart(
  "p99 latency per second",
  byStage((t) => t.p99Us),
  (x) => `${x}s`,
  tTicks,
  "µs",
  true,
)}
<h2>Latency by percentile</h2>
${chart(
  "Latency by percentile, per stage and operation",
  latency,
  (x) => NINES_LABELS[x] ?? "",
  [0, 1, 2, 3, 4, 5],
  "µs",
  true,
)}
</body></html>
`;
}
