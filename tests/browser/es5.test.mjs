// The page scripts run in WeChat's WebView as they are, without transpiling: they must
// be ES5. Parsing them as ES5 catches let/const, arrow functions, template literals,
// classes and the like before a phone does.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { parse } from 'acorn';

for (const file of ['wx-jssdk.js', 'demo.js']) {
  test(`public/${file} is ES5`, () => {
    const code = readFileSync(new URL(`../../public/${file}`, import.meta.url), 'utf8');
    assert.doesNotThrow(() => parse(code, { ecmaVersion: 5, sourceType: 'script' }));
  });
}
