/**
 * How long a graceful stop lets running work finish (SIGTERM to a container gets 10 s too). A
 * file of its own so that `guestlink agent --help` can say it without loading the agent.
 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
