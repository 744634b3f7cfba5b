/**
 * The dashboard (issue 18): `GET /` (and `/index.html`) is the page, `/assets/…` its script and
 * style (./page.ts) and uPlot's, read from node_modules/uplot/dist once, on the first request —
 * nothing from a CDN, so it works on a host without internet. Every response carries a strict
 * CSP (`default-src 'self'`, no inline script or style) and an ETag: browsers revalidate
 * (`no-cache`), so a new guestlink is never shown with an old script. docs/daemon.md.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS, FAVICON_SVG } from "./page.ts";

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/** uPlot's files the page loads, by the name they are served under (`/assets/NAME`). */
const UPLOT_FILES = ["uPlot.iife.min.js", "uPlot.min.css"] as const;

export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
};

let loaded: Map<string, Asset> | undefined;

function asset(name: string, body: string | Buffer): Asset {
  const buffer = typeof body === "string" ? Buffer.from(body) : body;
  const ext = name.slice(name.lastIndexOf(".") + 1);
  return {
    body: buffer,
    type: TYPES[ext] ?? "application/octet-stream",
    etag: `"${createHash("sha256").update(buffer).digest("base64url").slice(0, 22)}"`,
  };
}

/** The page and its assets by path; uPlot's read from where Node resolves the package. */
function assets(): Map<string, Asset> {
  if (loaded !== undefined) return loaded;
  const require = createRequire(import.meta.url);
  const map = new Map<string, Asset>([
    ["/", asset("index.html", DASHBOARD_HTML)],
    ["/assets/dashboard.js", asset("dashboard.js", DASHBOARD_JS)],
    ["/assets/dashboard.css", asset("dashboard.css", DASHBOARD_CSS)],
    ["/assets/favicon.svg", asset("favicon.svg", FAVICON_SVG)],
  ]);
  for (const file of UPLOT_FILES) {
    map.set(`/assets/${file}`, asset(file, readFileSync(require.resolve(`uplot/dist/${file}`))));
  }
  loaded = map;
  return map;
}

/**
 * Answers `req` if it asks for the dashboard (GET or HEAD of `/`, `/index.html` or one of its
 * assets) and returns true; returns false for anything else, which the caller routes on.
 */
export function serveDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  pathname: string,
): boolean {
  if (req.method !== "GET" && req.method !== "HEAD") return false;
  if (pathname !== "/" && pathname !== "/index.html" && !pathname.startsWith("/assets/")) {
    return false;
  }
  const found = assets().get(pathname === "/index.html" ? "/" : pathname);
  if (found === undefined) return false;
  const headers = {
    "content-type": found.type,
    "cache-control": "no-cache",
    etag: found.etag,
    "content-security-policy": DASHBOARD_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
  };
  if (req.headers["if-none-match"] === found.etag) {
    res.writeHead(304, headers);
    res.end();
    return true;
  }
  res.writeHead(200, { ...headers, "content-length": found.body.length });
  res.end(req.method === "HEAD" ? undefined : found.body);
  return true;
}
