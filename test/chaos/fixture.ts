/**
 * A chaos agent process for the `describe()` this is called in: started in a temporary folder
 * before its tests, stopped (and the folder removed) after them. `proxyAt()` names a new socket
 * for a proxy in that folder.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { AgentProcess } from "./scenarios.ts";

export interface ChaosAgentFixture {
  dir: string;
  /** The agent's address (`unix:…/agent.sock`), once started. */
  address: string;
  agent: AgentProcess | undefined;
  proxyAt(): { path: string };
}

export function chaosAgentFixture(prefix: string): ChaosAgentFixture {
  let proxies = 0;
  const fixture: ChaosAgentFixture = {
    dir: "",
    address: "",
    agent: undefined,
    proxyAt: () => ({ path: join(fixture.dir, `proxy-${++proxies}.sock`) }),
  };
  before(async () => {
    fixture.dir = await mkdtemp(join(tmpdir(), prefix));
    fixture.address = `unix:${join(fixture.dir, "agent.sock")}`;
    fixture.agent = new AgentProcess(fixture.address);
    await fixture.agent.ready;
  });
  after(async () => {
    await fixture.agent?.stop();
    await rm(fixture.dir, { recursive: true, force: true });
  });
  return fixture;
}
