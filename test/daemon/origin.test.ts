/**
 * The daemon's loopback HTTP API against web pages: any page the user's browser opens can reach
 * 127.0.0.1, so the API answers only requests for this machine's names (DNS rebinding sends the
 * page's own name in Host) and, of those a browser sends for a page (with Origin), only its own
 * pages'. Real daemon, real agent, requests as a browser would send them.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { WebSocket } from "ws";
import { type HeldFixture, startHeld } from "./held.ts";

interface Answer {
  status: number;
  body: { code?: string; message?: string; agents?: unknown[] };
}

function get(
  address: string,
  path: string,
  headers: Record<string, string>,
  socketPath?: string,
): Promise<Answer> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), address.split(":").pop()];
  return new Promise((resolve, reject) => {
    const req = request(
      socketPath === undefined
        ? { host, port: Number(port), path, headers }
        : { socketPath, path, headers },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** Opens the exec WebSocket with `origin`; resolves with the HTTP status it was refused with, or 101. */
function openExec(f: HeldFixture, argv: string[], origin: string): Promise<number> {
  const q = new URLSearchParams(argv.map((a): [string, string] => ["command", a]));
  const ws = new WebSocket(`ws://${f.http}/v1/agents/vm-1/exec?${q}`, "v5.channel.k8s.io", {
    origin,
  });
  return new Promise((resolve, reject) => {
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on("open", () => {
      ws.on("close", () => resolve(101));
    });
    ws.on("error", (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

describe("serve: the loopback API and web pages", () => {
  let f: HeldFixture;
  before(async () => {
    f = await startHeld("origin");
  });
  after(async () => {
    await f?.stop();
  });

  it("answers requests for 127.0.0.1 and localhost, and programs that send no Origin", async () => {
    const port = f.http.split(":").pop();
    for (const host of [f.http, `localhost:${port}`]) {
      const answer = await get(f.http, "/v1/agents", { host });
      assert.equal(answer.status, 200, host);
      assert.equal(answer.body.agents?.length, 2);
    }
  });

  it("refuses a request for another host name (DNS rebinding) with FORBIDDEN_ORIGIN", async () => {
    const port = f.http.split(":").pop();
    const answer = await get(f.http, "/v1/agents", { host: `attacker.example:${port}` });
    assert.equal(answer.status, 403);
    assert.equal(answer.body.code, "FORBIDDEN_ORIGIN");
    assert.match(answer.body.message ?? "", /attacker\.example/);
    assert.equal(answer.body.agents, undefined, "nothing of the API in the answer");
  });

  it("refuses what a page of another origin sends, and serves the daemon's own pages", async () => {
    const foreign = await get(f.http, "/v1/agents", { origin: "http://attacker.example" });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.body.code, "FORBIDDEN_ORIGIN");
    const own = await get(f.http, "/v1/agents", { origin: `http://${f.http}` });
    assert.equal(own.status, 200);
  });

  it("runs no command for a page of another origin that opens the exec WebSocket", async () => {
    const mark = join(f.dir, "ran");
    const status = await openExec(f, ["touch", mark], "http://attacker.example");
    assert.equal(status, 403);
    // The dashboard's own origin gets the same command run.
    assert.equal(await openExec(f, ["true"], `http://${f.http}`), 101);
    assert.equal(existsSync(mark), false, "the refused command never ran");
  });

  it("answers on its Unix socket whatever Host the client names", async () => {
    const answer = await get(
      f.http,
      "/v1/agents",
      { host: "guestlink" },
      join(f.dir, "serve.sock"),
    );
    assert.equal(answer.status, 200);
  });
});
