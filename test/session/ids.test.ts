/** The id space of calls and streams on its own: who allocates which ids, and what the peer may claim. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IdSpace } from "../../src/session/ids.ts";
import { ProtocolViolation } from "../../src/session/violation.ts";

/** Matches a ProtocolViolation naming `violation`. */
function violation(name: string) {
  return (err: unknown) => {
    assert.ok(err instanceof ProtocolViolation, `expected a ProtocolViolation, got ${err}`);
    assert.equal(err.violation, name);
    return true;
  };
}

describe("IdSpace", () => {
  it("allocates odd ids from 1 on the client", () => {
    const ids = new IdSpace("client");
    assert.deepEqual([ids.allocate(), ids.allocate(), ids.allocate()], [1, 3, 5]);
  });

  it("allocates even ids from 2 on the server", () => {
    // Never 0: stream 0 is the session's own.
    const ids = new IdSpace("server");
    assert.deepEqual([ids.allocate(), ids.allocate(), ids.allocate()], [2, 4, 6]);
  });

  it("lets the peer claim ids of its own parity, in increasing order with gaps", () => {
    const client = new IdSpace("client");
    client.claimPeer(2, "call");
    client.claimPeer(8, "call");
    const server = new IdSpace("server");
    server.claimPeer(1, "stream");
    server.claimPeer(3, "stream");
  });

  it("refuses a peer id from this side's half with BAD_ID", () => {
    const client = new IdSpace("client");
    assert.throws(() => client.claimPeer(3, "call"), violation("BAD_ID"));
    const server = new IdSpace("server");
    assert.throws(() => server.claimPeer(4, "stream"), violation("BAD_ID"));
  });

  it("names what the id was for in the violation's message", () => {
    const server = new IdSpace("server");
    assert.throws(() => server.claimPeer(2, "stream"), /stream id 2/);
    server.claimPeer(5, "call");
    assert.throws(() => server.claimPeer(5, "call"), /call id 5 was already used/);
  });

  it("refuses a peer id not above the highest it used with DUPLICATE_ID", () => {
    const server = new IdSpace("server");
    server.claimPeer(7, "call");
    // The same id again, and a lower one (closed, or skipped: ids only grow).
    assert.throws(() => server.claimPeer(7, "call"), violation("DUPLICATE_ID"));
    assert.throws(() => server.claimPeer(3, "call"), violation("DUPLICATE_ID"));
    // A refused claim does not move the mark: the next id above 7 is still fine.
    server.claimPeer(9, "call");
  });

  it("says an id of ours was used once it was allocated, and not before", () => {
    const client = new IdSpace("client");
    assert.equal(client.wasUsed(1), false);
    client.allocate();
    client.allocate();
    assert.equal(client.wasUsed(1), true);
    assert.equal(client.wasUsed(3), true);
    assert.equal(client.wasUsed(5), false);
  });

  it("says a peer id was used when it is at or below the highest the peer claimed", () => {
    const client = new IdSpace("client");
    assert.equal(client.wasUsed(2), false);
    client.claimPeer(6, "call");
    // 2 and 4 were skipped by the peer, but ids only grow: they can never be opened now.
    assert.equal(client.wasUsed(2), true);
    assert.equal(client.wasUsed(6), true);
    assert.equal(client.wasUsed(8), false);
  });

  it("does not take our allocations as the peer's, nor the peer's claims as ours", () => {
    const server = new IdSpace("server");
    server.allocate(); // 2
    server.allocate(); // 4
    assert.equal(server.wasUsed(3), false, "the peer claimed nothing");
    server.claimPeer(9, "call");
    assert.equal(server.wasUsed(6), false, "we allocated only up to 4");
  });

  it("resetPeer lets the restarted peer's ids begin again, while ours go on", () => {
    const server = new IdSpace("server");
    server.allocate(); // 2
    server.claimPeer(5, "call");
    server.resetPeer();
    assert.equal(server.wasUsed(5), false);
    server.claimPeer(1, "call");
    // Ours are not reused, so a reply meant for the old peer never matches a new call.
    assert.equal(server.allocate(), 4);
    assert.equal(server.wasUsed(2), true);
  });
});
