import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = dirname(fileURLToPath(import.meta.url));

// Two entry pages: the device (demo) page at / and the dashboard at /admin/.
export default defineConfig({
  root: 'web-client',
  base: '/',
  build: {
    outDir: resolve(root, 'dist/web'),
    emptyOutDir: true,
    chunkSizeWarningLimit: 4000,
    // With CROSS_ORIGIN_ISOLATION=1 (wasm threads), TF.js's wasm backend builds its thread workers
    // from the source text of its glue function, which minification breaks ("e is not defined").
    minify: process.env.CROSS_ORIGIN_ISOLATION !== '1',
    rollupOptions: {
      input: {
        main: resolve(root, 'web-client/index.html'),
        admin: resolve(root, 'web-client/admin/index.html'),
      },
    },
  },
  // the training worker (web-client/ml/train-worker.ts) is an ES module worker: TF.js's backends split into chunks
  worker: { format: 'es' },
  server: { proxy: { '/api': 'http://localhost:3000', '/socket.io': { target: 'ws://localhost:3000', ws: true }, '/vendor': 'http://localhost:3000' } },
});
