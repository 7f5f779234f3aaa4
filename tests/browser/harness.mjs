// What the browser tests share: the real `wx-jssdk --dev` binary on a free port,
// headless Chromium, and a page that believes it runs inside WeChat.
//
// WeChat is played by three stand-ins, each as close to the real thing as we can get:
// - the official JS-SDK is the npm package `weixin-js-sdk` (the same code as the CDN
//   file), served in place of https://res.wx.qq.com/open/js/jweixin-1.6.0.js by
//   intercepting that request (`context.route`): the page under test references the
//   production URL unchanged, and nothing third-party is compiled into the service;
// - `window.WeixinJSBridge`, which the WeChat client injects, is installed before any
//   page script (`addInitScript`) and verifies `preVerifyJSAPI` like WeChat does: it
//   recomputes sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U") with the sandbox's
//   current ticket and the URL WeChat would check (iOS: the entry URL; Android: the
//   current one, both without '#...');
// - the user agent is WeChat's (the SDK does nothing without "MicroMessenger" in it).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));

export const SDK_URL = 'https://res.wx.qq.com/open/js/jweixin-1.6.0.js';
/// The demo app `--dev` configures.
export const DEV_APPID = 'wxdev00000000000000';
/// A WeChat Work app added through the environment, for wx.agentConfig.
export const WORK = { name: 'oa', corpid: 'wwdev00000000000001', agentid: '1000002' };

export const USER_AGENTS = {
  android:
    'Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 ' +
    '(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160117 ' +
    'MMWEBSDK/20231202 MMWEBID/2247 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64 ' +
    'Weixin NetType/WIFI Language/zh_CN ABI/arm64',
  ios:
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 ' +
    '(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI ' +
    'Language/zh_CN',
  desktop:
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
    'Chrome/156.0.0.0 Safari/537.36',
};

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// The headless flags this machine needs: without the background-networking ones,
// Chromium's own connections are refused by the closed network and it stalls.
// Playwright adds a fresh temporary --user-data-dir itself, and removes it on close.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function sha1(text) {
  return createHash('sha1').update(text, 'utf8').digest('hex');
}

/// WeChat's wx.config / wx.agentConfig signature, written here independently of the
/// service's.
export function jssdkSignature(ticket, nonceStr, timestamp, url) {
  return sha1(`jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=${url}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// `wx-jssdk --dev` on a free port, with a WeChat Work app added through the
/// environment. Resolves once /healthz answers and the sandbox's address was printed.
export async function startService() {
  const bin = process.env.WXJSSDK_BIN;
  if (!bin) {
    throw new Error(
      'WXJSSDK_BIN is not set: the path of the wx-jssdk binary to test ' +
        '(`cargo test --test browser` sets it; by hand: WXJSSDK_BIN=../../target/debug/wx-jssdk)',
    );
  }
  const port = await freePort();
  const env = {
    ...process.env,
    WXJSSDK__SERVER__BIND: `127.0.0.1:${port}`,
    WXJSSDK__SERVER__WORKERS: '1',
    WXJSSDK__APPS__OA__KIND: 'work',
    WXJSSDK__APPS__OA__CORPID: WORK.corpid,
    WXJSSDK__APPS__OA__CORPSECRET: 'dev-work-secret',
    WXJSSDK__APPS__OA__AGENTID: WORK.agentid,
    RUST_LOG: process.env.RUST_LOG || 'warn',
  };
  delete env.WXJSSDK_CONFIG;
  const child = spawn(bin, ['--dev'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = null;
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  child.on('exit', (code, signal) => (exited = signal || `exit code ${code}`));
  child.on('error', (error) => (exited = error.message));
  // However the tests end, the service goes with them.
  process.on('exit', () => child.kill('SIGKILL'));

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      throw new Error(`${bin} --dev stopped (${exited}):\n${output}`);
    }
    const sandbox = /sandbox WeChat API at (http:\/\/\S+?),/.exec(output)?.[1];
    const up = await fetch(`${base}/healthz`).then((r) => r.ok, () => false);
    if (up && sandbox) {
      return {
        base,
        sandbox,
        output: () => output,
        stop: () => child.kill('SIGTERM'),
      };
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${bin} --dev did not answer within 20 s:\n${output}`);
    }
    await sleep(50);
  }
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/// The official SDK as the CDN serves it. The npm package is the same code in a
/// CommonJS wrapper (`module.exports = ...`, and no `window.wx`); the CDN file's UMD
/// wrapper sets `window.wx` and `window.jWeixin`, which this reproduces. `legacy`
/// removes the update*ShareData APIs, as in JS-SDK versions before 1.4.
/// `work` adds wx.agentConfig the way WeChat Work's jwxwork-1.0.0.js does (not on npm):
/// a bridge call `agentConfig` with the signed fields.
function officialSdk({ legacy = false, work = false } = {}) {
  const code = readFileSync(join(here, 'node_modules/weixin-js-sdk/index.js'), 'utf8');
  const extra = [];
  if (legacy) {
    extra.push('delete wx.updateAppMessageShareData; delete wx.updateTimelineShareData;');
  }
  if (work) {
    extra.push(`wx.agentConfig = function (o) {
      WeixinJSBridge.invoke('agentConfig', {
        corpid: o.corpid, agentid: o.agentid, timestamp: o.timestamp + '',
        nonceStr: o.nonceStr, signature: o.signature, jsApiList: o.jsApiList
      }, function (res) {
        var ok = res.err_msg === 'agentConfig:ok';
        (ok ? o.success : o.fail) && (ok ? o.success : o.fail)({ errMsg: res.err_msg });
      });
    };`);
  }
  return `(function () {
var module = { exports: {} };
${code}
var wx = window.wx = window.jWeixin = module.exports;
${extra.join('\n')}
})();`;
}

/// Runs in the page before any of its scripts: WeChat's WeixinJSBridge.
/// `reject`: how many preVerifyJSAPI calls to answer 'invalid signature' whatever
/// they carry (a signature made with a ticket WeChat no longer accepts).
/// `late`: install the bridge only after the page loaded, then fire
/// WeixinJSBridgeReady, as WeChat may.
function installBridge({ platform, reject, late }) {
  const withoutHash = (url) => url.split('#')[0];
  // What WeChat iOS calls the page's URL: the one it was entered with.
  const entryUrl = withoutHash(location.href);
  const record = (window.__bridge = { invokes: [], verifications: [], listeners: {} });
  let rejectLeft = reject;
  const bridge = {
    invoke(name, args, callback) {
      args = JSON.parse(JSON.stringify(args || {}));
      record.invokes.push({ name, args, at: location.href });
      const answer = (res) => setTimeout(() => callback && callback(res), 0);
      if (name === 'preVerifyJSAPI' || name === 'agentConfig') {
        const url = platform === 'ios' ? entryUrl : withoutHash(location.href);
        window.__wechatVerify(name, args, url).then((check) => {
          const forced = name === 'preVerifyJSAPI' && rejectLeft > 0;
          if (forced) rejectLeft -= 1;
          const ok = check.ok && !forced;
          record.verifications.push({
            name,
            url,
            signature: check.signature,
            expected: check.expected,
            valid: check.ok,
            forced,
            ok,
          });
          const prefix = name === 'preVerifyJSAPI' ? 'config' : name;
          answer({ err_msg: `${prefix}:${ok ? 'ok' : 'invalid signature'}` });
        });
        return;
      }
      if (name === 'getNetworkType') {
        answer({ err_msg: 'network_type:wifi' });
        return;
      }
      answer({ err_msg: `${name}:ok` });
    },
    on(name, callback) {
      record.listeners[name] = callback;
    },
  };
  if (!late) {
    window.WeixinJSBridge = bridge;
    return;
  }
  window.addEventListener('load', () =>
    setTimeout(() => {
      window.WeixinJSBridge = bridge;
      document.dispatchEvent(new Event('WeixinJSBridgeReady'));
    }, 100),
  );
}

/// A browser context that looks like WeChat on `platform` ('android' or 'ios', or
/// 'desktop' for a plain browser). Returns the page and the record of what left it:
/// the signing requests, the requests for the official SDK, and the requests to other
/// hosts (all refused). `cdn: false`: WeChat's CDN cannot be reached (the SDK's
/// requests fail as an unreachable host does), as on this machine without the test's
/// stand-in.
export async function wechatPage(browser, service, options = {}) {
  const {
    platform = 'android',
    reject = 0,
    late = false,
    legacy = false,
    work = false,
    cdn = true,
  } = options;
  const context = await browser.newContext({ userAgent: USER_AGENTS[platform] });
  const seen = { signs: [], sdk: 0, external: [] };

  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url === SDK_URL) {
      seen.sdk += 1;
      if (!cdn) {
        return route.abort('addressunreachable');
      }
      return route.fulfill({
        contentType: 'text/javascript; charset=utf-8',
        body: officialSdk({ legacy, work }),
      });
    }
    if (url.startsWith(`${service.base}/`)) {
      if (new URL(url).pathname.endsWith('/jssdk/config') || url.includes('/getJssdk')) {
        seen.signs.push(new URL(url).searchParams.get('url'));
      }
      return route.continue();
    }
    // The SDK's usage report and anything else: the test has no business outside.
    seen.external.push(url);
    return route.abort();
  });

  // WeChat's server side of the verification, done here with the sandbox's tickets.
  await context.exposeFunction('__wechatVerify', async (name, args, url) => {
    const work = name === 'agentConfig';
    const appid = work ? args.corpid : args.verifyAppId;
    const type = work ? 'agent_config' : appid === WORK.corpid ? 'corp_jsapi' : 'jsapi';
    const answer = await fetch(`${service.sandbox}/sandbox/ticket?appid=${appid}&type=${type}`);
    const ticket = answer.ok ? (await answer.json()).ticket : null;
    const fields = work
      ? [args.nonceStr, args.timestamp, args.signature]
      : [args.verifyNonceStr, args.verifyTimestamp, args.verifySignature];
    const expected = ticket && jssdkSignature(ticket, fields[0], fields[1], url);
    return { ok: !!ticket && expected === fields[2], signature: fields[2], expected };
  });

  if (platform !== 'desktop') {
    await context.addInitScript(installBridge, { platform, reject, late });
  }
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  return { context, page, seen, errors };
}

/// Waits for the demo page's #status to leave 'pending'; returns its state and text.
export async function demoOutcome(page) {
  await page.waitForFunction(
    () => document.getElementById('status')?.getAttribute('data-state') !== 'pending',
    null,
    { timeout: 15_000 },
  );
  return page.$eval('#status', (el) => ({
    state: el.getAttribute('data-state'),
    text: el.textContent,
  }));
}

/// What the stand-in bridge saw.
export function bridgeRecord(page) {
  return page.evaluate(() => ({
    invokes: window.__bridge.invokes,
    verifications: window.__bridge.verifications,
    listeners: Object.keys(window.__bridge.listeners),
  }));
}
