import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { it } from "node:test";
import { openSession, serveSessions } from "../src/index.ts";

it("the README's library example works as written", async () => {
  const dir = await mkdtemp(join(tmpdir(), "guestlink-readme-"));
  const address = `unix:${join(dir, "guestlink.sock")}`;
  const server = await serveSessions(address, (session) => {
    session.handle("hello", (params) => `hello, ${(params as { name: string }).name}`);
  });
  const session = await openSession(address);
  assert.equal(
    await session.call("hello", { name: "guest" }, { deadline: performance.now() + 5000 }),
    "hello, guest",
  );
  await session.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});
