import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Address, formatAddress, parseAddress } from "../../src/transport/address.ts";
import { throwsWith } from "../helpers/transport.ts";

/** [input, parsed, canonical form (when it differs from the input)] */
const VALID: [string, Address, string?][] = [
  ["unix:/run/guestlink.sock", { kind: "unix", path: "/run/guestlink.sock" }],
  ["unix:relative/g.sock", { kind: "unix", path: "relative/g.sock" }],
  ["unix:/tmp/with space:and colon", { kind: "unix", path: "/tmp/with space:and colon" }],
  ["tcp:127.0.0.1:7070", { kind: "tcp", host: "127.0.0.1", port: 7070 }],
  ["tcp:localhost:0", { kind: "tcp", host: "localhost", port: 0 }],
  ["tcp:agent-1.example.com:65535", { kind: "tcp", host: "agent-1.example.com", port: 65535 }],
  ["tcp:host.example.:22", { kind: "tcp", host: "host.example.", port: 22 }],
  ["tcp:[::1]:7070", { kind: "tcp", host: "::1", port: 7070 }],
  ["tcp:[::]:0", { kind: "tcp", host: "::", port: 0 }],
  ["tcp:[fe80::1%eth0]:80", { kind: "tcp", host: "fe80::1%eth0", port: 80 }],
  ["tcp:0.0.0.0:007", { kind: "tcp", host: "0.0.0.0", port: 7 }, "tcp:0.0.0.0:7"],
  ["vsock:3:1024", { kind: "vsock", cid: 3, port: 1024 }],
  ["vsock:4294967295:4294967295", { kind: "vsock", cid: 4294967295, port: 4294967295 }],
  ["fc:/srv/vm1/v.sock:52", { kind: "fc", path: "/srv/vm1/v.sock", port: 52 }],
  ["fc:/odd:path/v.sock:52", { kind: "fc", path: "/odd:path/v.sock", port: 52 }],
  [
    "serial:/dev/virtio-ports/org.guestlink.0",
    { kind: "serial", path: "/dev/virtio-ports/org.guestlink.0" },
  ],
  ["mailbox:/shared/folder", { kind: "mailbox", folder: "/shared/folder" }],
  ["stdio", { kind: "stdio" }],
  ["exec:cat", { kind: "exec", argv: ["cat"] }],
  [
    "exec:ssh host guestlink agent --stdio",
    { kind: "exec", argv: ["ssh", "host", "guestlink", "agent", "--stdio"] },
  ],
  [
    "exec:kubectl exec -i pod -- guestlink agent --stdio",
    { kind: "exec", argv: ["kubectl", "exec", "-i", "pod", "--", "guestlink", "agent", "--stdio"] },
  ],
  [
    "exec:  sh   -c\t'echo $HOME | tr a-z A-Z'  ",
    { kind: "exec", argv: ["sh", "-c", "echo $HOME | tr a-z A-Z"] },
    "exec:sh -c 'echo $HOME | tr a-z A-Z'",
  ],
  [
    `exec:printf "say \\"hi\\" \\\\ \\n" a\\ b it\\'s '' ""x`,
    { kind: "exec", argv: ["printf", 'say "hi" \\ \\n', "a b", "it's", "", "x"] },
    `exec:printf 'say "hi" \\ \\n' 'a b' 'it'\\''s' '' x`,
  ],
  ["exec:/usr/bin/env A=1 b", { kind: "exec", argv: ["/usr/bin/env", "A=1", "b"] }],
];

/** [input, what the message must say] */
const INVALID: [string, RegExp][] = [
  ["", /empty.*accepted forms: unix:PATH, tcp:HOST:PORT, vsock:CID:PORT/],
  ["/run/g.sock", /names no transport; did you mean unix:\/run\/g\.sock\?/],
  ["somewhere", /names no transport \(accepted forms/],
  ["http://x", /unknown transport "http" \(accepted forms/],
  ["TCP:1.2.3.4:5", /lower case: did you mean tcp:1\.2\.3\.4:5\?/],
  ["localhost:7070", /did you mean tcp:localhost:7070\?/],
  ["unix:", /unix address needs a path: unix:PATH/],
  ["unix:/a\0b", /NUL/],
  ["serial:", /serial address needs a device path: serial:PATH/],
  ["mailbox:", /mailbox address needs a folder: mailbox:FOLDER/],
  ["stdio:", /stdio takes nothing after it/],
  ["tcp:", /tcp address needs a port: tcp:HOST:PORT/],
  ["tcp:localhost", /tcp address needs a port: tcp:HOST:PORT/],
  ["tcp::7070", /tcp address needs a host: tcp:HOST:PORT \(to listen on every interface/],
  ["tcp:localhost:", /tcp port is missing: tcp:HOST:PORT/],
  ["tcp:localhost:http", /tcp port must be a decimal number from 0 to 65535, not "http"/],
  ["tcp:localhost:-1", /tcp port must be a decimal number/],
  ["tcp:localhost:65536", /tcp port 65536 is out of range \(0 to 65535\)/],
  ["tcp:localhost:1e3", /tcp port must be a decimal number/],
  ["tcp:::1:7070", /IPv6 addresses go in brackets, as in tcp:\[::1\]:7070/],
  ["tcp:[::1:7070", /no closing "\]"/],
  ["tcp:[::1]", /tcp address needs a port: tcp:\[::1\]:PORT/],
  ["tcp:[::1]7070", /expected ":PORT" after "\]"/],
  ["tcp:[localhost]:1", /"localhost" is not an IPv6 address/],
  ["tcp:999.1.1.1:80", /"999\.1\.1\.1" is not a valid IPv4 address/],
  ["tcp:bad host:80", /"bad host" is not a host name or IP address/],
  ["tcp:-bad.example:80", /is not a host name or IP address/],
  ["tcp:a..b:80", /is not a host name or IP address/],
  ["tcp://localhost:80", /not URLs: drop the "\/\/"/],
  ["vsock:3", /vsock address needs a context id and a port: vsock:CID:PORT/],
  ["vsock::5", /vsock address needs a context id and a port/],
  ["vsock:3:5:7", /vsock address needs a context id and a port/],
  ["vsock:x:5", /vsock CID must be a decimal number/],
  ["vsock:3:4294967296", /vsock port 4294967296 is out of range/],
  ["fc:/v.sock", /fc address needs a port after the socket path: fc:UDS_PATH:PORT/],
  ["fc::52", /fc address needs the path of Firecracker's vsock socket/],
  ["fc:/v.sock:port", /vsock port must be a decimal number/],
  ["exec:", /exec address needs a command: exec:COMMAND/],
  ["exec:   ", /exec address needs a command/],
  ["exec:'' arg", /exec command name is empty/],
  ["exec:echo 'open", /unterminated single quote/],
  ['exec:echo "open', /unterminated double quote/],
  ["exec:echo end\\", /lone backslash/],
  ["exec:ls | grep x", /without a shell, so an unquoted "\|".*exec:sh -c/],
  ["exec:agent > log", /unquoted ">"/],
  ["exec:echo $HOME", /unquoted "\$"/],
  ["exec:a; b", /unquoted ";"/],
];

describe("parseAddress", () => {
  for (const [input, expected] of VALID) {
    it(`parses ${JSON.stringify(input)}`, () => {
      assert.deepEqual(parseAddress(input), expected);
    });
  }

  for (const [input, message] of INVALID) {
    it(`rejects ${JSON.stringify(input)} with INVALID_ADDRESS saying what is wrong`, () => {
      const err = throwsWith(() => parseAddress(input), "INVALID_ADDRESS", message);
      assert.ok(err.message.includes(JSON.stringify(input)), "the message quotes the input");
    });
  }

  it("rejects a value that is not a string", () => {
    throwsWith(() => parseAddress(42 as unknown as string), "INVALID_ADDRESS", /must be a string/);
  });
});

describe("formatAddress", () => {
  for (const [input, parsed, canonical] of VALID) {
    it(`round-trips ${JSON.stringify(input)}`, () => {
      const text = formatAddress(parsed);
      assert.equal(text, canonical ?? input);
      assert.deepEqual(parseAddress(text), parsed);
    });
  }

  it("quotes exec words so that any argv survives the round trip", () => {
    const awkward = [
      "prog",
      "",
      " ",
      "'",
      '"',
      "\\",
      "a'b\"c\\d",
      "$HOME",
      "x|y",
      "tab\there",
      "new\nline",
      "ünï",
    ];
    const address: Address = { kind: "exec", argv: awkward };
    assert.deepEqual(parseAddress(formatAddress(address)), address);
  });

  it("rejects an address whose fields are out of range", () => {
    throwsWith(
      () => formatAddress({ kind: "tcp", host: "h", port: 70000 }),
      "INVALID_ADDRESS",
      /out of range/,
    );
    throwsWith(() => formatAddress({ kind: "unix", path: "" }), "INVALID_ADDRESS", /needs a path/);
    throwsWith(
      () => formatAddress({ kind: "exec", argv: [] }),
      "INVALID_ADDRESS",
      /needs a command/,
    );
    throwsWith(
      () => formatAddress({ kind: "nope" } as unknown as Address),
      "INVALID_ADDRESS",
      /cannot format an address of kind "nope"/,
    );
  });
});
