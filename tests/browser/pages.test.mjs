// The page side end to end: the demo page (and small single-page apps built on the
// helper) served by the real `wx-jssdk --dev`, in headless Chromium, with the official
// JS-SDK and a WeixinJSBridge that verifies signatures the way WeChat does (see
// harness.mjs). Run by `cargo test --test browser`, or here with
// `WXJSSDK_BIN=../../target/debug/wx-jssdk node --test`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  DEV_APPID,
  WORK,
  bridgeRecord,
  demoOutcome,
  jssdkSignature,
  launchBrowser,
  startService,
  wechatPage,
} from './harness.mjs';

let service;
let browser;

before(async () => {
  service = await startService();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  service?.stop();
});

/// A query with an encoded non-ASCII value and a fragment: the signed URL must be the
/// page's own string, byte for byte, without the fragment.
const DEMO_QUERY = '?utm_source=test&name=%E4%B8%AD%E6%96%87';

function demoUrl(fragment = '#top') {
  return `${service.base}/wxJssdk/public/${DEMO_QUERY}${fragment}`;
}

function invoked(record, name) {
  return record.invokes.filter((call) => call.name === name);
}

/// Records, in order, each part of the demo page that leaves 'pending' (`#signed`,
/// `#sdk`, `#status`) as "id:state". Call before `page.goto`.
async function recordShown(page) {
  await page.addInitScript(() => {
    window.__shown = [];
    new MutationObserver((changes) => {
      for (const change of changes) {
        const state = change.target.getAttribute('data-state');
        if (state !== 'pending') window.__shown.push(`${change.target.id}:${state}`);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });
  return () => page.evaluate(() => window.__shown);
}

/// The signature fields the demo page shows, by name.
function shownSignature(page) {
  return page.$$eval('#signed [data-field]', (fields) =>
    Object.fromEntries(fields.map((field) => [field.dataset.field, field.textContent])),
  );
}

/// Serves `html` at `path` on the service's origin (so the page uses the real helper
/// from the service, same origin): a page author's single-page app.
async function appPage(context, path, html) {
  const target = `${service.base}${path}`;
  await context.route((url) => url.href === target, (route) =>
    route.fulfill({ contentType: 'text/html; charset=utf-8', body: html }),
  );
}

/// A single-page app in the README's form (one script tag, one call): its router has
/// moved to another route before it sets its share card.
const SPA = `<!doctype html>
<html><head><meta charset="utf-8"><title>Shop</title></head><body>
<p id="status" data-state="pending"></p>
<script src="/wxJssdk/public/wx-jssdk.js"></script>
<script>
  history.pushState({}, '', '/shop/products/42?ref=menu');
  var out = document.getElementById('status');
  wxJssdk.share({ title: 'Product 42', desc: 'On sale' }).then(function () {
    out.setAttribute('data-state', 'ok'); out.textContent = 'config:ok';
  }, function (error) {
    out.setAttribute('data-state', 'error'); out.textContent = error.errMsg;
  });
</script>
</body></html>`;

test('the demo page signs itself, passes wx.config and sets both share cards', async () => {
  // The bridge arrives after the page loaded, with WeixinJSBridgeReady, as WeChat may.
  const { context, page, seen, errors } = await wechatPage(browser, service, { late: true });
  try {
    await page.goto(demoUrl());
    const outcome = await demoOutcome(page);
    assert.deepEqual(outcome, { state: 'ok', text: 'config:ok' });

    const pageUrl = `${service.base}/wxJssdk/public/${DEMO_QUERY}`;
    assert.deepEqual(seen.signs, [pageUrl], 'one signature, for the URL without #');
    const record = await bridgeRecord(page);
    assert.equal(record.verifications.length, 1);
    const [verification] = record.verifications;
    assert.equal(verification.url, pageUrl);
    assert.equal(verification.ok, true, 'the signature verifies with the sandbox ticket');
    assert.equal(verification.signature, verification.expected);

    const [config] = invoked(record, 'preVerifyJSAPI');
    assert.equal(config.args.verifyAppId, DEV_APPID);
    assert.equal(config.args.verifySignType, 'sha1');
    assert.ok(config.args.verifyJsApiList.includes('updateAppMessageShareData'));

    const title = await page.title();
    const [message] = invoked(record, 'updateAppMessageShareData');
    const [timeline] = invoked(record, 'updateTimelineShareData');
    assert.ok(message && timeline, 'both share calls were made');
    assert.equal(message.args.title, title);
    assert.equal(message.args.desc, 'A share card set by wx-jssdk.js');
    assert.equal(message.args.link, demoUrl());
    assert.equal(timeline.args.title, title);
    assert.equal(timeline.args.link, demoUrl());
    // Every bridge call carries the verified configuration.
    assert.equal(message.args.verifySignature, verification.signature);

    const shown = await page.$$eval('#shares li', (items) =>
      items.map((item) => item.getAttribute('data-api')),
    );
    assert.deepEqual(shown.sort(), ['updateAppMessageShareData', 'updateTimelineShareData']);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('a rejected signature is fetched again once, and the second one passes', async () => {
  const { context, page, seen } = await wechatPage(browser, service, { reject: 1 });
  try {
    await page.goto(demoUrl());
    assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'config:ok' });

    const record = await bridgeRecord(page);
    assert.deepEqual(
      record.verifications.map((v) => [v.forced, v.ok]),
      [
        [true, false],
        [false, true],
      ],
    );
    assert.equal(seen.signs.length, 2, 'a fresh signature was asked for');
    const [first, second] = record.verifications;
    assert.equal(first.valid, true, 'the first signature was right: WeChat refused it anyway');
    assert.notEqual(first.signature, second.signature);
    assert.equal(second.signature, second.expected);
    // The cards were set after the second verdict, with the configuration that passed.
    const shares = invoked(record, 'updateAppMessageShareData');
    assert.equal(shares.length, 1);
    assert.equal(shares[0].args.verifySignature, second.signature);
    const log = await page.$eval('#log', (el) => el.textContent);
    assert.match(log, /config:invalid signature: signing again/);
  } finally {
    await context.close();
  }
});

test('the retry happens once: a second rejection is shown, and no card is set', async () => {
  const { context, page, seen } = await wechatPage(browser, service, { reject: 2 });
  try {
    await page.goto(demoUrl());
    const outcome = await demoOutcome(page);
    assert.equal(outcome.state, 'error');
    assert.match(outcome.text, /^config:invalid signature: /);
    const record = await bridgeRecord(page);
    assert.equal(record.verifications.length, 2);
    assert.equal(seen.signs.length, 2);
    assert.equal(invoked(record, 'updateAppMessageShareData').length, 0);
  } finally {
    await context.close();
  }
});

test('iOS, single-page app: the entry URL is signed after pushState', async () => {
  const { context, page, seen } = await wechatPage(browser, service, { platform: 'ios' });
  try {
    await appPage(context, '/shop/?from=timeline', SPA);
    const entryUrl = `${service.base}/shop/?from=timeline`;
    await page.goto(`${entryUrl}#intro`);
    assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'config:ok' });

    const current = `${service.base}/shop/products/42?ref=menu`;
    assert.equal(page.url(), current, 'the router moved the page');
    assert.deepEqual(seen.signs, [entryUrl]);
    const record = await bridgeRecord(page);
    assert.deepEqual(
      record.verifications.map((v) => [v.url, v.ok]),
      [[entryUrl, true]],
    );
    // The share link is where the user is now; only the signature is the entry URL's.
    const [message] = invoked(record, 'updateAppMessageShareData');
    assert.equal(message.args.link, current);
    assert.equal(message.args.title, 'Product 42');
  } finally {
    await context.close();
  }
});

test('Android, single-page app: the current URL is signed after pushState', async () => {
  const { context, page, seen } = await wechatPage(browser, service, { platform: 'android' });
  try {
    await appPage(context, '/shop/?from=timeline', SPA);
    await page.goto(`${service.base}/shop/?from=timeline`);
    assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'config:ok' });

    const current = `${service.base}/shop/products/42?ref=menu`;
    assert.deepEqual(seen.signs, [current]);
    const record = await bridgeRecord(page);
    assert.deepEqual(
      record.verifications.map((v) => [v.url, v.ok]),
      [[current, true]],
    );
  } finally {
    await context.close();
  }
});

test('after a route change, Android is signed again and iOS keeps its configuration', async () => {
  for (const platform of ['android', 'ios']) {
    const { context, page, seen } = await wechatPage(browser, service, { platform });
    try {
      await page.goto(demoUrl(''));
      assert.equal((await demoOutcome(page)).state, 'ok', platform);
      await page.click('#navigate');
      assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'config:ok' }, platform);

      const record = await bridgeRecord(page);
      const moved = `${service.base}/wxJssdk/public/?route=2`;
      assert.equal(page.url(), moved);
      if (platform === 'android') {
        assert.deepEqual(seen.signs, [demoUrl(''), moved]);
        assert.deepEqual(
          record.verifications.map((v) => [v.url, v.ok]),
          [
            [demoUrl(''), true],
            [moved, true],
          ],
        );
      } else {
        assert.deepEqual(seen.signs, [demoUrl('')], 'iOS: nothing new to sign');
        assert.equal(record.verifications.length, 1);
      }
      const shares = invoked(record, 'updateAppMessageShareData');
      assert.equal(shares.length, 2, platform);
      assert.equal(shares[1].args.link, moved);
      assert.equal(shares[1].args.title, 'wx-jssdk demo (route 2)');
      assert.equal(shares[1].args.verifySignature, record.verifications.at(-1).signature);
    } finally {
      await context.close();
    }
  }
});

test('an SDK without update*ShareData gets the card through onMenuShare*', async () => {
  const { context, page } = await wechatPage(browser, service, { legacy: true });
  try {
    await page.goto(demoUrl());
    assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'config:ok' });
    let record = await bridgeRecord(page);
    assert.deepEqual(record.listeners.sort(), ['menu:share:appmessage', 'menu:share:timeline']);

    // The user taps "send to chat": WeChat fires the menu event, the SDK sends the card.
    await page.evaluate(() => window.__bridge.listeners['menu:share:appmessage']({}));
    await page.waitForFunction(() =>
      window.__bridge.invokes.some((call) => call.name === 'sendAppMessage'),
    );
    record = await bridgeRecord(page);
    const [sent] = invoked(record, 'sendAppMessage');
    assert.equal(sent.args.title, await page.title());
    assert.equal(sent.args.link, demoUrl());
    assert.equal(sent.args.desc, 'A share card set by wx-jssdk.js');
  } finally {
    await context.close();
  }
});

test('outside WeChat the demo says so, with the signature it got', async () => {
  const { context, page, seen } = await wechatPage(browser, service, { platform: 'desktop' });
  try {
    const shown = await recordShown(page);
    await page.goto(demoUrl());
    const outcome = await demoOutcome(page);
    assert.equal(outcome.state, 'error');
    assert.match(outcome.text, /^config:not in WeChat: /);
    assert.equal(seen.signs.length, 1);
    assert.match(await page.$eval('#log', (el) => el.textContent), /signed: appId wxdev/);
    assert.equal((await shownSignature(page)).appId, DEV_APPID);
    assert.equal(await page.$eval('#sdk', (el) => el.textContent), 'loaded');
    assert.deepEqual(await shown(), ['signed:ok', 'sdk:ok', 'status:error']);
  } finally {
    await context.close();
  }
});

test('CDN unreachable: the demo shows the signature, then the SDK as unavailable', async () => {
  for (const platform of ['desktop', 'android']) {
    const { context, page, seen, errors } = await wechatPage(browser, service, {
      platform,
      cdn: false,
    });
    try {
      const shown = await recordShown(page);
      await page.goto(demoUrl());
      const outcome = await demoOutcome(page);
      assert.equal(outcome.state, 'error', platform);
      assert.match(outcome.text, /^sdk:unavailable: /, platform);
      assert.ok(seen.sdk > 0, 'the page asked the CDN for the SDK');

      // The service's answer, field by field, and a signature WeChat would accept.
      const pageUrl = `${service.base}/wxJssdk/public/${DEMO_QUERY}`;
      assert.deepEqual(seen.signs, [pageUrl], platform);
      const signed = await shownSignature(page);
      assert.equal(signed.url, pageUrl);
      assert.equal(signed.appId, DEV_APPID);
      assert.match(signed.timestamp, /^\d+$/);
      assert.match(signed.nonceStr, /^[A-Za-z0-9]{16,}$/);
      const tickets = `${service.sandbox}/sandbox/ticket?appid=${DEV_APPID}&type=jsapi`;
      const { ticket } = await (await fetch(tickets)).json();
      assert.equal(
        signed.signature,
        jssdkSignature(ticket, signed.nonceStr, signed.timestamp, signed.url),
        'the signature shown verifies with the sandbox ticket',
      );

      const sdk = await page.$eval('#sdk', (el) => el.textContent);
      assert.match(sdk, /^unavailable: could not load the official JS-SDK from https:\/\/res\./);
      // Signature first, then the SDK's state, then the outcome.
      assert.deepEqual(await shown(), ['signed:ok', 'sdk:error', 'status:error'], platform);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  }
});

test('WeChat Work: wx.agentConfig follows a verified wx.config, both signed right', async () => {
  const { context, page } = await wechatPage(browser, service, { work: true });
  try {
    await appPage(
      context,
      '/oa/',
      `<!doctype html><html><head><meta charset="utf-8"><title>OA</title></head><body>
      <p id="status" data-state="pending"></p>
      <script src="/wxJssdk/public/wx-jssdk.js"></script>
      <script>
        var out = document.getElementById('status');
        wxJssdk.agentConfig({ jsApiList: ['selectExternalContact'] }, { app: '${WORK.name}' })
          .then(function () {
            out.setAttribute('data-state', 'ok'); out.textContent = 'agentConfig:ok';
          }, function (error) {
            out.setAttribute('data-state', 'error'); out.textContent = error.errMsg;
          });
      </script></body></html>`,
    );
    await page.goto(`${service.base}/oa/`);
    assert.deepEqual(await demoOutcome(page), { state: 'ok', text: 'agentConfig:ok' });
    const record = await bridgeRecord(page);
    assert.deepEqual(
      record.verifications.map((v) => [v.name, v.ok]),
      [
        ['preVerifyJSAPI', true],
        ['agentConfig', true],
      ],
    );
    const [config] = invoked(record, 'preVerifyJSAPI');
    assert.equal(config.args.verifyAppId, WORK.corpid);
    const [agent] = invoked(record, 'agentConfig');
    assert.equal(agent.args.corpid, WORK.corpid);
    assert.equal(agent.args.agentid, WORK.agentid);
    assert.deepEqual(agent.args.jsApiList, ['selectExternalContact']);
  } finally {
    await context.close();
  }
});
