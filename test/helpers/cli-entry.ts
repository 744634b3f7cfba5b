/** bin/guestlink, but from the TypeScript source, so CLI tests run what is being tested. */
import { main } from "../../src/cli/main.ts";

process.exitCode = await main(process.argv);
