// Vite for the console: plain esbuild JSX (no React plugin), a dev proxy to a running stack's edge
// (UPLION_EDGE_URL, default http://127.0.0.1:8080) so the browser calls /admin/v1 and /v1 on one origin.

import { defineConfig } from 'vitest/config';

const edge = process.env.UPLION_EDGE_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  esbuild: { jsx: 'automatic' },
  build: {
    target: 'es2022',
    outDir: process.env.UPLION_CONSOLE_OUT_DIR ?? 'dist',
    emptyOutDir: true,
    sourcemap: false,
    // no inline scripts or data: URLs: the server's CSP allows only same-origin files
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: {
      '/admin/v1': { target: edge, changeOrigin: true },
      '/v1': { target: edge, changeOrigin: true },
    },
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts', 'src/**/*.test.tsx'],
  },
});
