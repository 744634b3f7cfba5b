/**
 * End to end: a real Linux guest under QEMU (TCG), the guestlink agent in it, and the guestlink
 * CLI on the host talking to it, as a user would. Also the raw virtio-serial port the serial
 * transport rides on, with no guestlink in between.
 *
 * Skipped, saying why, on a machine without QEMU, a static busybox or Debian's kernel package
 * (see image.ts); GUESTLINK_QEMU_REQUIRED=1 (CI) turns that skip into a failure.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { hashSink } from "../../helpers/output-check.ts";
import { BarePort } from "./bare-port.ts";
import { CutProxy, upstreamOf } from "./cut-proxy.ts";
import { describeRun, type GuestlinkRun, runGuestlink } from "./host.ts";
import { type GuestImage, ImageUnavailable, prepareImage, SPAWN_ADDON } from "./image.ts";
import { bootVm, GUEST_SERIAL_LISTEN, GUEST_TCP_LISTEN, type Vm, type VmExit } from "./vm.ts";

/** How long a test may take at most; a stuck one fails instead of hanging the run. */
const TEST_TIMEOUT_MS = 120_000;
/** How long QEMU gets to exit after the guest was asked to power off. */
const EXIT_TIMEOUT_MS = 30_000;
const BIG_OUTPUT_BYTES = 20_000_000;
const PUT_BYTES = 8 * 1024 * 1024;
const bounded = { timeout: TEST_TIMEOUT_MS };

let skipReason: string | undefined;
let image: GuestImage | undefined;
const imageReady = (async () => {
  try {
    image = await prepareImage();
  } catch (err) {
    if (!(err instanceof ImageUnavailable) || process.env.GUESTLINK_QEMU_REQUIRED === "1") {
      throw err;
    }
    skipReason = `no QEMU guest on this machine: ${err.message}`;
  }
})();
imageReady.catch(() => {}); // reported by the before() hooks that await it

/** The booted VM, or undefined after marking the test skipped. */
function vmOrSkip(t: TestContext, vm: Vm | undefined): Vm | undefined {
  if (skipReason !== undefined) t.skip(skipReason);
  else if (vm === undefined) assert.fail("the VM did not boot (see the before hook's error)");
  return vm;
}

/** QEMU's exit, or a failure once EXIT_TIMEOUT_MS has passed (and QEMU is killed). */
async function exitOf(vm: Vm): Promise<VmExit> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), EXIT_TIMEOUT_MS);
  });
  const exit = await Promise.race([vm.exited, timeout]);
  clearTimeout(timer);
  if (exit === "timeout") {
    await vm.kill();
    assert.fail(`QEMU did not exit within ${EXIT_TIMEOUT_MS} ms\n${vm.console.tail()}`);
  }
  return exit;
}

/**
 * The checks every way of reaching the agent must pass, through the CLI: `boot` starts the VM,
 * and `addressOf` says where the host reaches the agent in it.
 */
function agentSuite(
  title: string,
  boot: (image: GuestImage) => Promise<Vm>,
  addressOf: (vm: Vm) => string,
): void {
  describe(title, { timeout: TEST_TIMEOUT_MS * 5 }, () => {
    let vm: Vm | undefined;
    let address = "";
    let dir = "";

    before(async () => {
      await imageReady;
      if (image === undefined) return;
      dir = await mkdtemp(join(tmpdir(), "guestlink-qemu-test-"));
      vm = await boot(image);
      address = addressOf(vm);
    });

    after(async () => {
      await vm?.kill();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** describeRun, and the guest console's last lines (the agent logs there): what a stall left. */
    const described = (args: readonly string[], r: GuestlinkRun) =>
      `${describeRun(args, r)}\nguest console:\n${vm?.console.tail() ?? "(no VM)"}`;

    test("info says who the agent is and which kernel the guest runs", bounded, async (t) => {
      if (!vmOrSkip(t, vm) || !image) return;
      const args = ["info", address, "--json"];
      const r = await runGuestlink(args);
      assert.equal(r.code, 0, described(args, r));
      const info = JSON.parse(r.stdout.toString()) as {
        hostname: string;
        os: { type: string; release: string };
        services: string[];
      };
      assert.equal(info.hostname, "guestlink-vm");
      assert.equal(info.os.type, "Linux");
      assert.equal(info.os.release, image.kernelRelease);
      assert.ok(info.services.includes("exec"), `services: ${info.services.join(", ")}`);
    });

    test("exec -- uname -a prints the guest kernel's line", bounded, async (t) => {
      if (!vmOrSkip(t, vm) || !image) return;
      const args = ["exec", address, "--", "uname", "-a"];
      const r = await runGuestlink(args);
      assert.equal(r.code, 0, described(args, r));
      const line = r.stdout.toString().trim();
      assert.match(line, /^Linux guestlink-vm \S+ #\d+/);
      assert.ok(line.includes(image.kernelRelease), line);
    });

    test(
      "exec in the guest: real pipes, and a terminal with -tt, when the spawn addon is there",
      bounded,
      async (t) => {
        if (!vmOrSkip(t, vm)) return;
        const native = existsSync(SPAWN_ADDON);
        const pipes = ["exec", address, "--", "readlink", "/proc/self/fd/1"];
        const p = await runGuestlink(pipes);
        assert.equal(p.code, 0, described(pipes, p));
        assert.match(p.stdout.toString(), native ? /^pipe:/ : /^socket:/);
        const tty = ["exec", "-tt", address, "--", "sh", "-c", "tty; exit 3"];
        const r = await runGuestlink(tty);
        if (native) {
          assert.equal(r.code, 3, described(tty, r));
          assert.match(r.stdout.toString(), /^\/dev\/pts\/\d+\r\n$/);
        } else {
          assert.equal(r.code, 255, described(tty, r));
          assert.match(r.stderr, /\[TTY_UNSUPPORTED\]/);
        }
      },
    );

    test("exec -- dmesg returns the guest's kernel log from its first line", bounded, async (t) => {
      if (!vmOrSkip(t, vm)) return;
      const args = ["exec", address, "--", "dmesg"];
      const r = await runGuestlink(args);
      assert.equal(r.code, 0, described(args, r));
      const log = r.stdout.toString();
      assert.match(log, /Linux version \d/);
      // The first line of the boot and one near its end: the whole log, not a piece of it.
      assert.match(log, /Run \/init as init process/);
    });

    test("20 MB of command output arrives whole and in order (sha256)", bounded, async (t) => {
      if (!vmOrSkip(t, vm)) return;
      // Random bytes, hashed in the guest before they are sent (on stderr, while stdout streams).
      // busybox seq would make content the host can compute, but takes 15 s under TCG.
      const script = `head -c ${BIG_OUTPUT_BYTES} /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big`;
      const args = ["exec", address, "--", "sh", "-c", script];
      const sink = hashSink();
      const r = await runGuestlink(args, { stdout: sink });
      assert.equal(r.code, 0, described(args, r));
      const guestSha256 = /^([0-9a-f]{64})\s/.exec(r.stderr)?.[1];
      assert.ok(guestSha256, `no sha256 from the guest on stderr: ${JSON.stringify(r.stderr)}`);
      assert.deepEqual(sink.digest(), { sha256: guestSha256, bytes: BIG_OUTPUT_BYTES });
    });

    test("a file put into the guest comes back byte-exact with get", bounded, async (t) => {
      if (!vmOrSkip(t, vm)) return;
      const local = join(dir, "out.bin");
      const back = join(dir, "back.bin");
      const data = randomBytes(PUT_BYTES);
      const sha256 = createHash("sha256").update(data).digest("hex");
      await writeFile(local, data, { mode: 0o640 });

      const put = ["put", address, local, "/tmp/put.bin"];
      const p = await runGuestlink(put);
      assert.equal(p.code, 0, described(put, p));

      // The guest's own sha256sum, so the file is checked where it landed too.
      const sum = ["exec", address, "--", "sha256sum", "/tmp/put.bin"];
      const s = await runGuestlink(sum);
      assert.equal(s.code, 0, described(sum, s));
      assert.equal(s.stdout.toString().split(/\s+/)[0], sha256);

      const get = ["get", address, "/tmp/put.bin", back];
      const g = await runGuestlink(get);
      assert.equal(g.code, 0, described(get, g));
      assert.ok((await readFile(back)).equals(data), "the file that came back differs");
    });

    test(
      "a stream cut in the middle completes byte-exact after the CLI reconnects",
      bounded,
      async (t) => {
        if (!vmOrSkip(t, vm)) return;
        // The CLI reaches the agent through a proxy that breaks the connection halfway through.
        const proxy = await CutProxy.start(upstreamOf(address), dir);
        try {
          proxy.cutAfter(BIG_OUTPUT_BYTES / 2);
          const script = `head -c ${BIG_OUTPUT_BYTES} /dev/urandom > /tmp/cut && sha256sum /tmp/cut >&2 && cat /tmp/cut`;
          const args = ["exec", proxy.address, "--", "sh", "-c", script];
          const sink = hashSink();
          const r = await runGuestlink(args, { stdout: sink });
          assert.equal(r.code, 0, described(args, r));
          assert.equal(proxy.cuts.length, 1, "the connection was cut once");
          assert.ok(
            proxy.connections >= 2,
            `the CLI dialled again (${proxy.connections} connections)`,
          );
          const guestSha256 = /^([0-9a-f]{64})\s/m.exec(r.stderr)?.[1];
          assert.ok(guestSha256, `no sha256 from the guest on stderr: ${JSON.stringify(r.stderr)}`);
          assert.deepEqual(sink.digest(), { sha256: guestSha256, bytes: BIG_OUTPUT_BYTES });
        } finally {
          await proxy.close();
        }
      },
    );

    test(
      "a stopped agent powers the guest off and QEMU exits with status 0",
      bounded,
      async (t) => {
        const booted = vmOrSkip(t, vm);
        if (!booted) return;
        // The shell's parent is the agent: SIGTERM makes it finish this session and exit, and init
        // powers off when it does (guest/init.sh).
        const args = ["exec", address, "--", "sh", "-c", "kill -TERM $PPID"];
        const r = await runGuestlink(args);
        assert.equal(r.code, 0, described(args, r));
        const exit = await exitOf(booted);
        assert.deepEqual(
          exit,
          { code: 0, signal: null, killed: false, poweredOff: true },
          booted.console.tail(),
        );
        assert.ok(
          booted.console.find(/^guestlink-init: agent exited with status 0/),
          booted.console.tail(),
        );
        // Every session ended with its host's close, none by keepalive giving up on a host long
        // gone (which also kept the agent from stopping for 15 s).
        assert.equal(booted.console.find(/"session ended"/), undefined, booted.console.tail());
      },
    );
  });
}

// The agent listens on its port too, unused: a listener with no host must not keep the agent
// from stopping when it is told to.
agentSuite(
  "the agent in a QEMU guest, reached over tcp (user-mode networking, hostfwd)",
  (image) => bootVm({ image, listen: [GUEST_TCP_LISTEN, GUEST_SERIAL_LISTEN] }),
  (vm) => vm.tcpAddress as string,
);

agentSuite(
  "the agent in a QEMU guest, on its virtio-serial port (serial:, the host on QEMU's chardev socket)",
  (image) => bootVm({ image, listen: [GUEST_SERIAL_LISTEN] }),
  (vm) => vm.serialAddress,
);

describe("the raw virtio-serial port of a QEMU guest (no guestlink in between)", {
  timeout: TEST_TIMEOUT_MS * 3,
}, () => {
  let vm: Vm | undefined;
  let port: BarePort | undefined;

  before(async () => {
    await imageReady;
    if (image === undefined) return;
    vm = await bootVm({ image, mode: "echo" });
    port = await BarePort.connect(vm.serialSocket);
  });

  after(async () => {
    port?.close();
    await vm?.kill();
  });

  test("bytes sent into the port come back unchanged", bounded, async (t) => {
    if (!vmOrSkip(t, vm) || !port) return;
    const data = randomBytes(1024 * 1024);
    const { back } = await port.echo(data);
    assert.ok(back.equals(data), "the echoed bytes differ");
  });

  test("the port carries 8 MiB each way intact", bounded, async (t) => {
    if (!vmOrSkip(t, vm) || !port) return;
    const n = 8 * 1024 * 1024;
    assert.equal((await port.sink(n)).bytes, n);
    // receive() checks every byte against what the guest is known to send.
    assert.equal((await port.receive(n, "source")).bytes, n);
    assert.equal((await port.receive(n, "dd")).bytes, n);
  });

  test("quit ends the guest program, and QEMU exits with status 0", bounded, async (t) => {
    const booted = vmOrSkip(t, vm);
    if (!booted || !port) return;
    await port.quit();
    const exit = await exitOf(booted);
    assert.deepEqual(
      exit,
      { code: 0, signal: null, killed: false, poweredOff: true },
      booted.console.tail(),
    );
  });
});
