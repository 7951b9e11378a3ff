import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "packages/*/src/**/*.test.ts",
      "packages/*/test/**/*.test.ts",
      "examples/**/*.test.ts",
    ],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Socket tests open real handles; a hung handle must fail the run, not stall it.
    teardownTimeout: 10_000,
    pool: "forks",
  },
});
