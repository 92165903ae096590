import { defineConfig } from "vitest/config";

// The console is served by k8shell-api at `/`; in development `npm run dev` proxies the API to a
// running platform (K8SHELL_URL, default the all-in-one's http://127.0.0.1:8080).
const api = process.env.K8SHELL_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  build: {
    target: "es2022",
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/api": { target: api, ws: true, changeOrigin: false },
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
