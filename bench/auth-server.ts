/**
 * The far end of `auth.bench.ts`, a process of its own (as an agent is):
 *
 *   node --import tsx bench/auth-server.ts PLAIN_PORT KEYED_PORT KEY_HEX
 *
 * serves "echo" and "produce" (see session-server.ts) on tcp:127.0.0.1:PLAIN_PORT without a key
 * and on tcp:127.0.0.1:KEYED_PORT with the key (TLS 1.3 PSK), from the TypeScript source. Prints
 * "ready" once listening on both; exits when its stdin closes or on SIGTERM.
 */
import { SOURCE_LIB, serveGuestlink, serveUntilStdinEnds } from "./session-server.ts";

async function main([plain, keyed, keyHex]: readonly string[]): Promise<void> {
  if (plain === undefined || keyed === undefined || keyHex === undefined) {
    throw new Error("usage: auth-server.ts PLAIN_PORT KEYED_PORT KEY_HEX");
  }
  const key = Uint8Array.from(Buffer.from(keyHex, "hex"));
  const stops = await Promise.all([
    serveGuestlink(SOURCE_LIB, `tcp:127.0.0.1:${plain}`, {}),
    serveGuestlink(SOURCE_LIB, `tcp:127.0.0.1:${keyed}`, {}, { key }),
  ]);
  serveUntilStdinEnds(stops);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(
    `auth-server: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
