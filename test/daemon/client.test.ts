/**
 * The `@ID` client (src/daemon/client.ts) against a real daemon holding a real agent process: the
 * upgrade's answer is read from the same buffers as the session's frames, which are read into
 * again once the output is written (as with a direct `unix:` address), and the daemon's refusal
 * is still an error with its code and details.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { remoteExec } from "../../src/controller/exec.ts";
import { openDaemonSession } from "../../src/daemon/client.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { SLAB_READ_BYTES } from "../../src/transport/slab-reads.ts";
import { randomOutput, textSink } from "../helpers/output-check.ts";
import { type HeldFixture, startHeld } from "./held.ts";

describe("the @ID client (openDaemonSession)", () => {
  let held: HeldFixture;
  let socketPath: string;
  before(async () => {
    held = await startHeld("client");
    socketPath = join(held.dir, "serve.sock");
  });
  after(() => held?.stop());

  it("streams an agent's output byte-exact through a few read buffers, used again", async () => {
    const session = await openDaemonSession("vm-1", { socketPath });
    try {
      const bytes = 32 * 1024 * 1024;
      // What arrived, hashed, and how much of it in each read slab: most of it in a few slabs
      // read into again, where Node's own reads (this client's before) bring a new 64 KiB
      // buffer each. The sink keeps nothing once a write is done, as process.stdout.
      const hash = createHash("sha256");
      let got = 0;
      const slabs = new Map<ArrayBufferLike, number>();
      const stdout = new Writable({
        write(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          got += chunk.length;
          if (chunk.buffer.byteLength === SLAB_READ_BYTES) {
            slabs.set(chunk.buffer, (slabs.get(chunk.buffer) ?? 0) + chunk.length);
          }
          done();
        },
      });
      const stderr = textSink();
      const result = await remoteExec(
        session,
        { argv: randomOutput(bytes, join(held.remote, "out.bin")) },
        { stdout, stderr, recycle: true },
      );
      assert.equal(result.status, 0);
      assert.equal(got, bytes);
      assert.equal(
        hash.digest("hex"),
        stderr.text().split(" ")[0],
        "the bytes arrived as the command wrote them",
      );
      const inSlabs = [...slabs.values()].reduce((a, b) => a + b, 0);
      assert.ok(slabs.size >= 1 && slabs.size <= 8, `${slabs.size} slabs for 32 MiB`);
      // The rest: payloads that straddled two slabs, assembled into a buffer of their own.
      assert.ok(inSlabs >= bytes / 2, `${inSlabs} of ${bytes} bytes came in the slabs`);
    } finally {
      await session.close();
    }
  });

  it("refuses an agent the daemon does not hold with AGENT_NOT_FOUND, naming those it has", async () => {
    await assert.rejects(
      openDaemonSession("nobody", { socketPath }),
      (err: unknown) =>
        isGuestlinkError(err, "AGENT_NOT_FOUND") &&
        /nobody/.test(err.message) &&
        (err.details as { available?: string[] }).available?.includes("vm-1") === true,
    );
  });
});
