/**
 * The daemon's dashboard (`GET /`): its page and assets as served (types, caching, a strict CSP),
 * then the page in a real headless browser (Debian's chromium through playwright-core, no
 * browser download) over a daemon holding real agents, each a process of its own: the agents
 * listed and up, one whose socket appears shows up without a reload, one that stops shows down
 * and goes when its socket goes, the chart gets points, and the page logs no error (a CSP
 * violation would be one). A screenshot is written to the test's folder; with
 * GUESTLINK_UPDATE_SCREENSHOTS=1 it is copied to docs/images/dashboard.png for the docs.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { readServeConfig } from "../../src/daemon/config.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { requires } from "../helpers/requires.ts";

/** Every wait for the page is bounded by this; none is a claim about how fast anything is. */
const WAIT_MS = 30_000;
const DOCS_SCREENSHOT = fileURLToPath(new URL("../../docs/images/dashboard.png", import.meta.url));

let dir: string;
let agentsDir: string;
let daemon: Daemon;
let base: string;
const agents = new Map<string, AgentProcess>();

async function agent(id: string): Promise<AgentProcess> {
  const started = await startAgent(join(agentsDir, `${id}.sock`));
  agents.set(id, started);
  return started;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-dash-"));
  agentsDir = join(dir, "agents");
  await mkdir(agentsDir);
  await Promise.all([agent("vm-1"), agent("vm-2")]);
  daemon = await Daemon.start(
    readServeConfig({
      socket: join(dir, "api.sock"),
      http: "127.0.0.1:0",
      discover: [join(agentsDir, "*.sock")],
    }),
    { discoverPollMs: 100 },
  );
  base = `http://${daemon.httpAddress}`;
});

after(async () => {
  await daemon?.close();
  await Promise.all([...agents.values()].map((a) => a.kill()));
  await rm(dir, { recursive: true, force: true });
});

describe("the dashboard's files", () => {
  it("serves the page, its script and style and uPlot's, with types, ETags and a strict CSP", async () => {
    const expected: [string, string][] = [
      ["/", "text/html; charset=utf-8"],
      ["/index.html", "text/html; charset=utf-8"],
      ["/assets/dashboard.js", "text/javascript; charset=utf-8"],
      ["/assets/dashboard.css", "text/css; charset=utf-8"],
      ["/assets/uPlot.iife.min.js", "text/javascript; charset=utf-8"],
      ["/assets/uPlot.min.css", "text/css; charset=utf-8"],
      ["/assets/favicon.svg", "image/svg+xml"],
    ];
    for (const [path, type] of expected) {
      const res = await fetch(base + path);
      const body = await res.text();
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get("content-type"), type, path);
      assert.equal(res.headers.get("cache-control"), "no-cache", path);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", path);
      assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'self'/, path);
      assert.doesNotMatch(res.headers.get("content-security-policy") ?? "", /unsafe/, path);
      assert.ok(body.length > 0, path);
      // Unchanged: the browser keeps its copy.
      const again = await fetch(base + path, {
        headers: { "if-none-match": res.headers.get("etag") ?? "" },
      });
      assert.equal(again.status, 304, path);
    }
    const page = await (await fetch(`${base}/`)).text();
    // No inline script or style: every <script> has a src, no style attributes or elements.
    assert.doesNotMatch(page, /<script(?![^>]*\bsrc=)[^>]*>/);
    assert.doesNotMatch(page, /<style|\sstyle=/);
    // Nothing from elsewhere: every URL is the daemon's own.
    assert.doesNotMatch(page, /(src|href)="(https?:)?\/\//);
    assert.match(await (await fetch(`${base}/assets/uPlot.iife.min.js`)).text(), /var uPlot=/);
  });

  it("leaves other paths to the API: unknown assets are JSON 404s, the API still answers", async () => {
    const missing = await fetch(`${base}/assets/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, "NOT_FOUND");
    const head = await fetch(`${base}/`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
    const posted = await fetch(`${base}/`, { method: "POST" });
    assert.equal(posted.status, 404);
    const list = (await (await fetch(`${base}/v1/agents`)).json()) as { agents: { id: string }[] };
    assert.deepEqual(list.agents.map((a) => a.id).sort(), ["vm-1", "vm-2"]);
  });
});

/** Where `chromium` is on PATH (Debian's /usr/bin/chromium). */
function chromiumPath(): string {
  for (const d of (process.env.PATH ?? "").split(delimiter)) {
    if (d !== "" && existsSync(join(d, "chromium"))) return join(d, "chromium");
  }
  return "/usr/bin/chromium";
}

const row = (id: string, state?: string) =>
  `[data-testid="agent-row"][data-agent-id="${id}"]${state ? `[data-state="${state}"]` : ""}`;

async function points(page: Page): Promise<number> {
  return Number(await page.getAttribute('[data-testid="chart"]', "data-points"));
}

/** Waits (bounded) until the chart has `n` points or more: the page keeps the count in data-points. */
async function pointsAtLeast(page: Page, n: number, timeout: number): Promise<void> {
  // Run in the page (a function, not a string: the page's CSP forbids eval). This file is
  // compiled without the DOM's types, hence the little one here.
  type Doc = { querySelector(s: string): { dataset: Record<string, string | undefined> } | null };
  await page.waitForFunction(
    (least) => {
      const chart = (globalThis as unknown as { document: Doc }).document.querySelector(
        '[data-testid="chart"]',
      );
      return Number(chart?.dataset.points) >= least;
    },
    n,
    { timeout },
  );
}

describe("the dashboard in a browser", { skip: requires("chromium") }, () => {
  let browser: Browser;
  after(async () => {
    await browser?.close();
  });

  it("lists the agents live, follows them coming and going, and charts the selected one", async () => {
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("requestfailed", (r) => {
      // An EventSource closed by the page (a new selection, the page going) is not a failure.
      if (!r.url().includes("/v1/")) problems.push(`request failed: ${r.url()}`);
    });
    await page.goto(`${base}/`);
    const wait = { timeout: WAIT_MS };

    // The agents held at start, up.
    await page.waitForSelector(row("vm-1", "up"), wait);
    await page.waitForSelector(row("vm-2", "up"), wait);
    assert.equal(await page.textContent(`${row("vm-1")} .state`), "up");
    await page.waitForSelector('[data-testid="stream"][data-state="live"]', wait);

    // The first agent up is charted; its points grow as samples come.
    await page.waitForSelector('[data-testid="chart-agent"]:text("vm-1")', wait);
    await pointsAtLeast(page, 2, WAIT_MS);
    const before = await points(page);
    await pointsAtLeast(page, before + 1, WAIT_MS);
    assert.ok(await page.$('[data-testid="chart"] canvas'), "uPlot drew a canvas");

    // An agent whose socket appears shows up, without a reload.
    await agent("vm-3");
    await page.waitForSelector(row("vm-3", "up"), wait);
    await page.waitForSelector('[data-testid="event"][data-type="added"]:has-text("vm-3")', wait);

    // One that stops shows down while its socket is there, and goes with its socket.
    await agents.get("vm-2")?.kill();
    await page.waitForSelector(row("vm-2", "down"), wait);
    await rm(join(agentsDir, "vm-2.sock"));
    await page.waitForSelector(row("vm-2"), { ...wait, state: "detached" });
    await page.waitForSelector('[data-testid="event"][data-type="removed"]:has-text("vm-2")', wait);
    assert.deepEqual(
      await page.$$eval('[data-testid="agent-row"]', (rows) =>
        rows.map((r) => `${r.getAttribute("data-agent-id")}=${r.getAttribute("data-state")}`),
      ),
      ["vm-1=up", "vm-3=up"],
    );

    // Selecting another agent charts it instead.
    await page.click(row("vm-3"));
    await page.waitForSelector('[data-testid="chart-agent"]:text("vm-3")', wait);
    await pointsAtLeast(page, 3, WAIT_MS);

    const shot = join(dir, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.GUESTLINK_UPDATE_SCREENSHOTS === "1") {
      // For the docs, a chart with a line worth looking at.
      await pointsAtLeast(page, 40, 120_000);
      await page.screenshot({ path: shot, fullPage: true });
      await copyFile(shot, DOCS_SCREENSHOT);
    }
    assert.deepEqual(problems, []);
  });
});
