/** Loopback TCP ports for tests and benchmarks. */
import { createServer } from "node:net";

/**
 * A port nothing listens on now on 127.0.0.1 (the kernel's pick, released at once). Another
 * process may bind it before the caller does: callers that start servers on it retry on a new one.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
