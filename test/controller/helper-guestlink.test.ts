/** A helper that speaks guestlink on its stdio: `guestlink agent --stdio`, run as a user would. */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { remoteExec } from "../../src/controller/exec.ts";
import { type HelperEvent, spawnHelper } from "../../src/controller/helpers/helper.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { CLI_COMMAND } from "../helpers/cli.ts";

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

describe("a helper process (guestlink)", () => {
  it("runs a session over the helper's stdio; what it prints before the protocol is skipped; a restart brings a new session", async () => {
    // A wrapper that chatters on stdout before the agent takes over: stray output, as a login
    // script or a library might print it.
    const agent = CLI_COMMAND.map(quote).join(" ");
    const helper = spawnHelper({
      command: "sh",
      args: [
        "-c",
        `echo 'welcome to the helper'; printf 'noise without a newline'; exec ${agent} agent --stdio`,
      ],
      protocol: "guestlink",
      restart: { backoff: { baseMs: 1, ceilingMs: 5 } },
    });
    const events: HelperEvent[] = [];
    helper.onEvent((e) => events.push(e));
    try {
      await helper.ready();
      const session = helper.session;
      assert.ok(session !== undefined);
      const stdout = new PassThrough();
      const chunks: Buffer[] = [];
      stdout.on("data", (c: Buffer) => chunks.push(c));
      const result = await remoteExec(
        session,
        { argv: ["sh", "-c", "echo hello from $0; exit 3", "the agent"] },
        { stdout, stderr: new PassThrough().resume() },
      );
      assert.equal(result.exitCode, 3);
      assert.equal(Buffer.concat(chunks).toString(), "hello from the agent\n");
      assert.ok(events.some((e) => e.type === "ready"));
      // The chatter was skipped and counted, byte for byte.
      const chatter = "welcome to the helper\nnoise without a newline";
      assert.equal(session.wireStats.skippedBytes, Buffer.byteLength(chatter));

      // The agent dies: the session ends with HELPER_EXITED, and a new one comes with the restart.
      const pid = helper.pid as number;
      const readyAgain = new Promise<void>((resolve) =>
        helper.onEvent((e) => {
          if (e.type === "ready") resolve();
        }),
      );
      process.kill(pid, "SIGKILL");
      const closed = await session.closed;
      assert.ok(isGuestlinkError(closed, "HELPER_EXITED"), `${closed?.code} ${closed?.message}`);
      await readyAgain;
      assert.notEqual(helper.session, session);
      assert.notEqual(helper.pid, pid);
      const again = await remoteExec(
        helper.session as NonNullable<typeof helper.session>,
        { argv: ["true"] },
        { stdout: new PassThrough().resume(), stderr: new PassThrough().resume() },
      );
      assert.equal(again.exitCode, 0);
    } finally {
      await helper.stop();
    }
    assert.equal(helper.session, undefined);
  });
});
