/**
 * A child process for the stdio transport tests: echoes its stdin to its stdout through
 * `connectStdio`, then closes. Run with `node --import tsx test/helpers/stdio-echo.ts`.
 */
import { connectStdio } from "../../src/transport/stdio.ts";
import { echo } from "./transport.ts";

await echo(await connectStdio());
