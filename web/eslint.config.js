// ESLint (flat config): JavaScript's and TypeScript's recommended rules, and Vue's for the components.
// `npm run lint` runs it, and `make test` runs that before the unit tests.
import js from '@eslint/js'
import pluginVue from 'eslint-plugin-vue'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  // Built output, and the API types generated from the server's OpenAPI document (`make web-types`).
  { ignores: ['dist/**', 'src/lib/api-types.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...pluginVue.configs['flat/recommended'],
  {
    rules: {
      // An argument a test double or callback must accept but does not use is named `_like_this`.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Layout, not correctness: the templates keep short elements and their attributes on one line,
      // and <input /> is the components' style (there is no formatter to agree with these).
      'vue/max-attributes-per-line': 'off',
      'vue/singleline-html-element-content-newline': 'off',
      'vue/html-self-closing': 'off',
    },
  },
  {
    // All network access goes through the API layer (src/lib/api.ts): nothing else reaches for the network.
    files: ['src/**/*.ts', 'src/**/*.vue'],
    ignores: ['src/lib/api.ts', 'src/**/*.test.ts', 'src/lib/testing.ts'],
    rules: {
      'no-restricted-globals': ['error', ...['fetch', 'EventSource', 'XMLHttpRequest', 'WebSocket'].map((name) => ({
        name,
        message: 'Network access belongs in src/lib/api.ts (the API layer).',
      }))],
    },
  },
  {
    files: ['**/*.vue'],
    languageOptions: { parserOptions: { parser: tseslint.parser } },
    // vue-tsc already knows every name in scope (browser globals included); ESLint's no-undef does not.
    rules: { 'no-undef': 'off' },
  },
)
