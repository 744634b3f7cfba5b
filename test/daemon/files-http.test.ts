/**
 * GET and PUT /v1/agents/ID/files?path=… through a daemon holding a real agent process: bytes
 * and the sha256 trailer of a download, uploads with and without x-guestlink-sha256 (a wrong
 * one replaces nothing), errors as JSON with fitting statuses, and a client that goes away
 * mid-upload leaving the target as it was and no temporary file.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { type IncomingMessage, request } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { eventually, type HeldFixture, startHeld } from "./held.ts";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface Answer {
  status: number;
  headers: IncomingMessage["headers"];
  trailers: IncomingMessage["trailers"];
  body: Buffer;
}

describe("files over HTTP", () => {
  let f: HeldFixture;

  before(async () => {
    f = await startHeld("files-http");
  });
  after(async () => {
    await f?.stop();
  });

  function call(
    method: string,
    path: string,
    options: { body?: Buffer; headers?: Record<string, string>; id?: string } = {},
  ): Promise<Answer> {
    const [host, port] = f.http.split(":") as [string, string];
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host,
          port: Number(port),
          method,
          path: `/v1/agents/${options.id ?? "vm-1"}/files?path=${encodeURIComponent(path)}`,
          headers: options.headers,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({
              status: res.statusCode as number,
              headers: res.headers,
              trailers: res.trailers,
              body: Buffer.concat(chunks),
            }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(options.body);
    });
  }

  const json = (a: Answer) => JSON.parse(a.body.toString()) as Record<string, unknown>;
  const temps = async () =>
    (await readdir(f.remote)).filter((name) => name.includes(".guestlink-"));

  it("downloads a file with its sha256 and size as trailers", async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(join(f.remote, "big.bin"), bytes);
    const a = await call("GET", join(f.remote, "big.bin"));
    assert.equal(a.status, 200);
    assert.equal(a.headers["content-type"], "application/octet-stream");
    assert.equal(a.headers["transfer-encoding"], "chunked");
    assert.ok(a.body.equals(bytes), "the bytes");
    assert.equal(a.trailers["x-guestlink-sha256"], sha256(bytes));
    assert.equal(a.trailers["x-guestlink-size"], String(bytes.length));

    await writeFile(join(f.remote, "empty"), "");
    const empty = await call("GET", "empty"); // relative to the agent's working folder
    assert.equal(empty.status, 200);
    assert.equal(empty.body.length, 0);
    assert.equal(empty.trailers["x-guestlink-sha256"], sha256(Buffer.alloc(0)));
  });

  it("uploads a file, with and without x-guestlink-sha256", async () => {
    const bytes = randomBytes(2 * 1024 * 1024 + 5);
    const target = join(f.remote, "up.bin");
    const plain = await call("PUT", target, { body: bytes });
    assert.equal(plain.status, 200, plain.body.toString());
    assert.deepEqual(
      { ...json(plain), mode: undefined },
      {
        schemaVersion: 1,
        path: target,
        size: bytes.length,
        sha256: sha256(bytes),
        mode: undefined,
      },
    );
    assert.ok((await readFile(target)).equals(bytes));

    const other = Buffer.from("second version\n");
    const checked = await call("PUT", target, {
      body: other,
      headers: { "x-guestlink-sha256": sha256(other).toUpperCase() },
    });
    assert.equal(checked.status, 200, checked.body.toString());
    assert.equal(json(checked).sha256, sha256(other));
    assert.ok((await readFile(target)).equals(other));
    assert.deepEqual(await temps(), []);
  });

  it("refuses an upload whose x-guestlink-sha256 does not match, replacing nothing", async () => {
    const target = join(f.remote, "kept.txt");
    await writeFile(target, "the original\n");
    const body = randomBytes(1024 * 1024);
    const a = await call("PUT", target, {
      body,
      headers: { "x-guestlink-sha256": sha256(Buffer.from("something else")) },
    });
    assert.equal(a.status, 422);
    const error = json(a);
    assert.equal(error.code, "CHECKSUM_MISMATCH");
    assert.match(error.message as string, /was not replaced/);
    assert.equal(await readFile(target, "utf8"), "the original\n");
    // The agent deletes its temporary file once the call is cancelled.
    await eventually(async () => (await temps()).length === 0, 5_000, "temporary files gone");

    const bad = await call("PUT", target, { body, headers: { "x-guestlink-sha256": "abc" } });
    assert.equal(bad.status, 400);
    assert.equal(json(bad).code, "INVALID_OPTION");
  });

  it("answers errors as JSON with the codes of get and put", async () => {
    const missing = await call("GET", join(f.remote, "no-such-file"));
    assert.equal(missing.status, 404);
    assert.match(String(missing.headers["content-type"]), /^application\/json/);
    assert.equal(missing.headers.trailer, undefined);
    const body = json(missing);
    assert.equal(body.schemaVersion, 1);
    assert.equal(body.code, "FILE_NOT_FOUND");
    assert.match(body.message as string, /^in the agent .*no-such-file/);

    await mkdir(join(f.remote, "folder"), { recursive: true });
    const folder = await call("GET", join(f.remote, "folder"));
    assert.equal(folder.status, 409);
    assert.equal(json(folder).code, "IS_A_DIRECTORY");

    const noFolder = await call("PUT", join(f.remote, "nowhere", "x"), { body: Buffer.from("x") });
    assert.equal(noFolder.status, 404);
    assert.equal(json(noFolder).code, "FILE_NOT_FOUND");

    const noPath = await call("GET", "");
    assert.equal(noPath.status, 400);
    assert.equal(json(noPath).code, "INVALID_OPTION");

    const unknown = await call("GET", "x", { id: "vm-9" });
    assert.equal(unknown.status, 404);
    assert.equal(json(unknown).code, "AGENT_NOT_FOUND");

    const down = await call("GET", "x", { id: "down-1" });
    assert.equal(down.status, 503);
    assert.equal(json(down).code, "AGENT_UNAVAILABLE");
  });

  it("cancels an upload whose client goes away: nothing replaced, no temporary file", async () => {
    const target = join(f.remote, "half.txt");
    await writeFile(target, "before\n");
    const [host, port] = f.http.split(":") as [string, string];
    const req = request({
      host,
      port: Number(port),
      method: "PUT",
      path: `/v1/agents/vm-1/files?path=${encodeURIComponent(target)}`,
      headers: { "content-length": String(10 * 1024 * 1024) },
    });
    req.on("error", () => {});
    req.write(randomBytes(256 * 1024));
    await eventually(async () => (await temps()).length > 0, 5_000, "the upload started");
    req.destroy();
    await eventually(async () => (await temps()).length === 0, 5_000, "temporary file gone");
    assert.equal(await readFile(target, "utf8"), "before\n");
  });
});
