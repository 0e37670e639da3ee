// The contract suite: the console's API client against a real edge (Envoy's REST transcoding in
// front of the accounts service). Run by tests/web/test_console_contract.py, which starts the edge and
// passes UPLION_EDGE_URL and UPLION_ADMIN_TOKEN.

import { defineConfig } from 'vitest/config';

export default defineConfig({
  esbuild: { jsx: 'automatic' },
  test: {
    environment: 'node',
    include: ['src/contract/**/*.contract.ts'],
    testTimeout: 30_000,
    fileParallelism: false,
  },
});
