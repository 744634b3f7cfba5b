/** nats:// addresses: what they parse to, the round trip, and descriptions that hold no secret. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatAddress, parseAddress } from "../../src/index.ts";
import { natsDescription, parseNatsServers } from "../../src/transport/nats-address.ts";

describe("nats: addresses", () => {
  it("parse servers, credentials, the agent id and a creds file", () => {
    assert.deepEqual(parseAddress("nats://127.0.0.1:4222/io-1"), {
      kind: "nats",
      servers: ["127.0.0.1:4222"],
      agent: "io-1",
    });
    assert.deepEqual(parseAddress("nats://tok@h1,h2:5222,[::1]:6222/a_b"), {
      kind: "nats",
      servers: ["h1:4222", "h2:5222", "[::1]:6222"],
      token: "tok",
      agent: "a_b",
    });
    assert.deepEqual(parseAddress("nats://ops:p%40ss%3Aw@h/x?creds=/etc/n.creds"), {
      kind: "nats",
      servers: ["h:4222"],
      user: "ops",
      pass: "p@ss:w",
      creds: "/etc/n.creds",
      agent: "x",
    });
  });

  it("format back to what parses to the same", () => {
    for (const text of [
      "nats://127.0.0.1:4222/io-1",
      "nats://ops:p%40ss%3Aw@h:4222/x?creds=%2Fetc%2Fn.creds",
      "nats://t@a:1,b:2/z",
    ]) {
      const a = parseAddress(text);
      assert.deepEqual(parseAddress(formatAddress(a)), a);
    }
  });

  it("describe the servers and agent without credentials", () => {
    const a = parseAddress("nats://ops:secret@h:4222/x?creds=/etc/n.creds");
    assert.equal(a.kind, "nats");
    if (a.kind !== "nats") return;
    assert.equal(natsDescription(a, a.agent), "nats://h:4222/x");
  });

  it("refuse what NATS cannot carry or what is malformed, saying why", () => {
    for (const [text, why] of [
      ["nats://h:4222", /needs the agent's id/],
      ["nats://h:4222/", /needs the agent's id/],
      ["nats://h/a.b", /not usable on NATS/],
      ["nats://h/a*", /not usable on NATS/],
      ["nats://h/a/b", /not usable on NATS/],
      ["nats:h:4222/a", /are URLs/],
      ["nats:///a", /needs a server/],
      ["nats://h:0/a", /port/],
      ["nats://h:70000/a", /port/],
      ["nats://h:x/a", /port/],
      ["nats://b@d!/a", /not a host name/],
      ["nats://@h/a", /nothing before "@"/],
      ["nats://h/a?user=x", /unknown parameter "user"/],
      ["nats://h/a?creds=", /needs the path/],
    ] as const) {
      assert.throws(() => parseAddress(text), { code: "INVALID_ADDRESS", message: why }, text);
    }
  });

  it("a discovery query is servers and, if given, an agent-id pattern", () => {
    const invalid = (p: string) => new Error(p);
    assert.deepEqual(parseNatsServers("nats://a,b:5", invalid), { servers: ["a:4222", "b:5"] });
    assert.deepEqual(parseNatsServers("nats://a/io-*", invalid), {
      servers: ["a:4222"],
      match: "io-*",
    });
    assert.throws(() => parseNatsServers("nats://a/io.*", invalid), /not an agent-id pattern/);
    assert.throws(() => parseNatsServers("tcp:a:1", invalid), /nats:\/\/HOST:PORT/);
  });
});
