import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import tailwindcss from '@tailwindcss/vite'

// The edge serves web/dist at "/", so absolute "/" asset URLs are right.
export default defineConfig({
  base: '/',
  plugins: [vue(), tailwindcss()],
  server: {
    proxy: {
      // SSE goes through this proxy too; http-proxy streams it without buffering.
      '/api': { target: 'http://127.0.0.1:8000', changeOrigin: true },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
})
