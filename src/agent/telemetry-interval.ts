/**
 * How often the telemetry service samples, in a file of its own so that `guestlink watch` can
 * check `--interval` without loading the service.
 */
export const MIN_TELEMETRY_INTERVAL_MS = 100;
export const MAX_TELEMETRY_INTERVAL_MS = 3_600_000;
export const DEFAULT_TELEMETRY_INTERVAL_MS = 1_000;
