/** guestlink's public API. */
export * from "./errors.ts";
export { nodeCrc32 } from "./platform/node.ts";
export * from "./wire/index.ts";
