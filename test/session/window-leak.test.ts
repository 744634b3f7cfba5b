/**
 * Session credit must come back when a stream goes away with bytes nobody consumed (a handler
 * that fails before reading its input, a cancelled call whose reader held data): otherwise a
 * long-lived session stalls once a session window's worth has leaked.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { sessionPair, settle } from "../helpers/session.ts";

describe("session: credit of abandoned streams", () => {
  it("gives back the session window of unread bytes when calls fail or are cancelled", async () => {
    const window = 256 * 1024;
    const { client, server } = sessionPair({
      client: { streamWindowBytes: window, sessionWindowBytes: window },
      server: { streamWindowBytes: window, sessionWindowBytes: window },
    });
    server
      .handle("refuse", () => {
        throw Object.assign(new Error("no"), { code: "REFUSED" });
      })
      .handle("hold", () => new Promise(() => {}))
      .handle("sink", async (_p, ctx) => {
        const input = ctx.streams.in as SessionStream;
        let n = 0;
        await new Promise<void>((resolve, reject) =>
          input.attach({
            data: (c) => {
              n += c.length;
              input.consumed(c.length);
            },
            end: resolve,
            error: reject,
          }),
        );
        return n;
      });
    // Ten times the session window goes into streams that are abandoned unread.
    for (let i = 0; i < 10; i++) {
      const refused = client.open("refuse", {}, { streams: ["in"] });
      (refused.streams.in as SessionStream).write(new Uint8Array(window / 2));
      await assert.rejects(refused.result);
      const held = client.open("hold", {}, { streams: ["in"] });
      (held.streams.in as SessionStream).write(new Uint8Array(window / 2));
      await settle();
      held.cancel();
      await assert.rejects(held.result, (e: unknown) => isGuestlinkError(e, "CANCELLED"));
      (held.streams.in as SessionStream).reset("CANCELLED", "test");
    }
    // The session still moves data.
    const ok = client.open("sink", {}, { streams: ["in"] });
    (ok.streams.in as SessionStream).write(new Uint8Array(window * 2));
    (ok.streams.in as SessionStream).end();
    assert.equal(await ok.result, window * 2);
  });
});
