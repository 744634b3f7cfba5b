/** Waits for a condition a real process brings about: bounded, never a timing assertion. */

/** Polls `probe` every 50 ms until it returns a value (not undefined); fails after 30 s. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
}
