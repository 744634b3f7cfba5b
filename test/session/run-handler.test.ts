/**
 * Running one of the peer's calls on its own (session/run-handler.ts): fakes of the reply's ports
 * record what happened in what order.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deferred } from "../../src/abort.ts";
import type { Handler, HandlerContext } from "../../src/session/call.ts";
import { runHandler } from "../../src/session/run-handler.ts";
import type { SessionStream } from "../../src/session/stream.ts";

const CTX = {} as HandlerContext<unknown>;

/** Runs `handler` with `output` fake streams; `log` says what happened, in order. */
function run(handler: Handler, output: string[] = [], outputDone = () => Promise.resolve()) {
  const log: string[] = [];
  const streams = output.map(
    (name) => ({ end: () => log.push(`end ${name}`) }) as unknown as SessionStream,
  );
  runHandler(handler, "params", CTX, {
    output: streams,
    outputDone: (s) => {
      log.push(`drain ${output[streams.indexOf(s)]}`);
      return outputDone();
    },
    sendResult: (value) => log.push(`result ${String(value)}`),
    fail: (err) => log.push(`fail ${(err as Error).message}`),
    finish: () => log.push("finish"),
  });
  const settled = async () => {
    for (let i = 0; i < 10; i++) await Promise.resolve();
    return log;
  };
  return { log, settled };
}

describe("runHandler", () => {
  it("calls the handler in a later microtask, with the call's params and context", async () => {
    let got: unknown[] = [];
    const { log, settled } = run((params, ctx) => {
      got = [params, ctx];
      return 1;
    });
    assert.deepEqual(log, [], "not within the CALL's own handling");
    assert.deepEqual(await settled(), ["result 1", "finish"]);
    assert.deepEqual(got, ["params", CTX]);
  });

  it("replies with what the handler throws, or its promise rejects with, and finishes", async () => {
    const thrown = run(() => {
      throw new Error("boom");
    });
    assert.deepEqual(await thrown.settled(), ["fail boom", "finish"]);
    const rejected = run(() => Promise.reject(new Error("later")));
    assert.deepEqual(await rejected.settled(), ["fail later", "finish"]);
  });

  it("awaits a promise, and reads a thenable's then once", async () => {
    assert.deepEqual(await run(async () => 2).settled(), ["result 2", "finish"]);
    let reads = 0;
    const thenable = {
      // biome-ignore lint/suspicious/noThenProperty: a thenable is what this test hands over
      get then() {
        reads++;
        return (resolve: (v: unknown) => void) => resolve(3);
      },
    };
    assert.deepEqual(await run(() => thenable).settled(), ["result 3", "finish"]);
    assert.equal(reads, 1);
  });

  it("ends the output streams and waits until they are sent before the result goes", async () => {
    const sent = deferred<void>();
    const { settled } = run(
      () => 4,
      ["out", "err"],
      () => sent.promise,
    );
    assert.deepEqual(await settled(), ["end out", "end err", "drain out", "drain err"]);
    sent.resolve();
    assert.deepEqual(await settled(), [
      "end out",
      "end err",
      "drain out",
      "drain err",
      "result 4",
      "finish",
    ]);
  });
});
