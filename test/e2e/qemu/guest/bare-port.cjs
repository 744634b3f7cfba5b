#!/usr/bin/env node
/**
 * The raw virtio-serial baseline, run in the guest by `guestlink.mode=echo` (guest/init.sh): plain
 * reads and writes on the port, no framing, no checksums, so the agent's own figures can be put
 * next to what the port itself does. The host side is bare-port.ts. Line commands, host to guest:
 *
 *   ping             answered "pong"
 *   echo N           the next N bytes are written back as they arrive
 *   sink N           the next N bytes are read and counted, then "sank N MICROSECONDS" is written
 *   source N         N bytes of PATTERN (below) are written with 64 KiB writes from node
 *   dd N             the port is closed and busybox `dd if=/dev/zero bs=64k` writes N bytes of
 *                    zeros to it, then the port is opened again and "ready" is written
 *   quit             exits 0 (init then powers the VM off)
 *
 * Everything is synchronous: one reader, one writer, nothing else to do, and a blocking read is
 * what a port does best. While no host is connected a read returns 0 at once instead of blocking,
 * so that is waited out with a short sleep; a host that goes away ends whatever was in progress.
 */
"use strict";
const fs = require("node:fs");
const { spawnSync } = require("node:child_process");

const port = process.argv[2] ?? "/dev/virtio-ports/org.guestlink.0";
const CHUNK_BYTES = 64 * 1024;
const IDLE_POLL_MS = 20;
/** What `source` sends: byte i of the stream is PATTERN[i % PATTERN.length]. */
const PATTERN = Buffer.from(Array.from({ length: 251 }, (_, i) => (i * 7 + 3) & 0xff));

const buffer = Buffer.alloc(CHUNK_BYTES);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
let fd = fs.openSync(port, "r+");
/** Bytes read past the current command line, not yet consumed. */
let pending = Buffer.alloc(0);

class HostGone extends Error {}

/** Blocks until the host sends something; throws HostGone if it disconnects. */
function readSome(connected) {
  for (;;) {
    const n = fs.readSync(fd, buffer, 0, buffer.length, null);
    if (n > 0) return buffer.subarray(0, n);
    if (connected) throw new HostGone();
    Atomics.wait(sleeper, 0, 0, IDLE_POLL_MS);
  }
}

function writeAll(data) {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off, null);
}

function readLine(connected) {
  for (;;) {
    const nl = pending.indexOf(0x0a);
    if (nl >= 0) {
      const line = pending.subarray(0, nl).toString("utf8").trim();
      pending = pending.subarray(nl + 1);
      return line;
    }
    pending = Buffer.concat([pending, readSome(connected)]);
  }
}

/** Calls `each` with the next `n` bytes of the stream, as they arrive. */
function consume(n, each) {
  let left = n;
  while (left > 0) {
    if (pending.length === 0) pending = Buffer.from(readSome(true));
    const take = pending.subarray(0, Math.min(left, pending.length));
    pending = pending.subarray(take.length);
    left -= take.length;
    each(take);
  }
}

function source(n) {
  const block = Buffer.alloc(CHUNK_BYTES + PATTERN.length);
  for (let i = 0; i < block.length; i++) block[i] = PATTERN[i % PATTERN.length];
  let sent = 0;
  while (sent < n) {
    const start = sent % PATTERN.length;
    const len = Math.min(CHUNK_BYTES, n - sent);
    writeAll(block.subarray(start, start + len));
    sent += len;
  }
}

function dd(n) {
  fs.closeSync(fd);
  const count = Math.ceil(n / CHUNK_BYTES);
  const r = spawnSync("dd", ["if=/dev/zero", `of=${port}`, `bs=${CHUNK_BYTES}`, `count=${count}`], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  fd = fs.openSync(port, "r+");
  writeAll(Buffer.from(r.status === 0 ? "ready\n" : `dd failed ${r.status ?? r.signal}\n`));
}

function serve(line) {
  const [command, arg] = line.split(/\s+/);
  const n = Number(arg);
  switch (command) {
    case "ping":
      writeAll(Buffer.from("pong\n"));
      return true;
    case "echo":
      consume(n, (chunk) => writeAll(chunk));
      return true;
    case "sink": {
      let start;
      consume(n, () => {
        start ??= process.hrtime.bigint();
      });
      const us = start === undefined ? 0n : (process.hrtime.bigint() - start) / 1000n;
      writeAll(Buffer.from(`sank ${n} ${us}\n`));
      return true;
    }
    case "source":
      source(n);
      return true;
    case "dd":
      dd(n);
      return true;
    case "quit":
      return false;
    default:
      writeAll(Buffer.from(`unknown command ${JSON.stringify(line)}\n`));
      return true;
  }
}

for (;;) {
  try {
    // The first line of a connection is waited for; once it came, a 0-byte read means goodbye.
    if (!serve(readLine(false))) process.exit(0);
    for (;;) if (!serve(readLine(true))) process.exit(0);
  } catch (err) {
    if (!(err instanceof HostGone)) throw err;
    pending = Buffer.alloc(0);
  }
}
