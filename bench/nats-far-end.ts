/**
 * The far end of `nats.bench.ts`, a process of its own (as an agent is):
 *
 *   node --import tsx bench/nats-far-end.ts TCP_PORT NATS_URL
 *
 * serves "echo" and "produce" (see session-server.ts) on tcp:127.0.0.1:TCP_PORT and on
 * NATS_URL/bench (a nats: agent address), and a bare nats.js responder that echoes every request
 * on the subject `bench.echo` (the floor a guestlink call over NATS is set against). Prints
 * "ready" once all three are up; exits when its stdin closes or on SIGTERM.
 */
import { connect } from "@nats-io/transport-node";
import { SOURCE_LIB, serveGuestlink, serveUntilStdinEnds } from "./session-server.ts";

async function main([tcpPort, natsUrl]: readonly string[]): Promise<void> {
  if (tcpPort === undefined || natsUrl === undefined) {
    throw new Error("usage: nats-far-end.ts TCP_PORT NATS_URL");
  }
  const nc = await connect({ servers: natsUrl.replace(/^nats:\/\//, "") });
  nc.subscribe("bench.echo", {
    callback: (err, msg) => {
      if (err === null) msg.respond(msg.data);
    },
  });
  await nc.flush();
  const stops = await Promise.all([
    serveGuestlink(SOURCE_LIB, `tcp:127.0.0.1:${tcpPort}`, {}),
    serveGuestlink(SOURCE_LIB, `${natsUrl}/bench`, {}),
  ]);
  serveUntilStdinEnds([...stops, () => nc.close()]);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(
    `nats-far-end: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
