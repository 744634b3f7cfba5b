/**
 * The id space of calls and streams (docs/protocol.md 9.3): the client allocates odd ids from 1,
 * the server even ids from 2; ids only grow, so an id below the highest used is a closed one.
 */
import { ProtocolViolation } from "./violation.ts";

export class IdSpace {
  readonly #peerParity: number;
  #next: number;
  /** The highest call or stream id the peer has allocated. */
  #highestPeer = 0;

  constructor(role: "client" | "server") {
    this.#next = role === "client" ? 1 : 2;
    this.#peerParity = role === "client" ? 0 : 1;
  }

  /** A new id of ours. */
  allocate(): number {
    const id = this.#next;
    this.#next += 2;
    return id;
  }

  /** Checks a new id from the peer (its half, above any it used before) and takes it. */
  claimPeer(id: number, what: string): void {
    if (!this.#isPeers(id)) {
      throw new ProtocolViolation(
        "BAD_ID",
        `${what} id ${id} is from this side's half of the id space`,
      );
    }
    if (id <= this.#highestPeer) {
      throw new ProtocolViolation("DUPLICATE_ID", `${what} id ${id} was already used`);
    }
    this.#highestPeer = id;
  }

  /** An id that was opened once (by either side). */
  wasUsed(id: number): boolean {
    return this.#isPeers(id) ? id <= this.#highestPeer : id < this.#next;
  }

  /** The peer restarted: its ids begin again (ours go on, so old replies never match). */
  resetPeer(): void {
    this.#highestPeer = 0;
  }

  #isPeers(id: number): boolean {
    return id % 2 === this.#peerParity;
  }
}
