/**
 * The entry point of the bundled agent, `dist/guestlink-agent.cjs` (`npm run build:agent`): one
 * file that runs with plain `node` and no node_modules, to copy into a guest.
 *   node guestlink-agent.cjs --listen unix:/run/guestlink.sock
 */
import { main } from "./main.ts";

main(process.argv, { agentOnly: true }).then((code) => {
  process.exitCode = code;
});
