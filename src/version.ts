/** guestlink's version, kept equal to package.json's by test/version.test.ts (the bundled agent has no package.json). */
export const VERSION = "0.1.0";
