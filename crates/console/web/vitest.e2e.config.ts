import { defineConfig } from "vitest/config";

// The console against a running platform in headless Chromium (crates/e2e/tests/console.rs
// starts the platform and runs this). No time limit on a test: a failing step says which.
export default defineConfig({
  test: {
    environment: "node",
    include: ["e2e/**/*.e2e.ts"],
    testTimeout: 0,
    hookTimeout: 0,
    fileParallelism: false,
    // A hang guard for waits on the page (a workspace start, a replay), not a speed limit.
    expect: { poll: { timeout: 120_000, interval: 100 } },
  },
});
