/*!
 * wx-jssdk.js: the page side of wx-jssdk. Signs the page with the service, calls
 * wx.config, and sets share cards. Plain ES5, no build step, no dependencies: it runs
 * as it is in WeChat's WebView (old Android ones included).
 *
 * One tag and one call give a page its share card:
 *
 *   <script src="/wxJssdk/public/wx-jssdk.js"></script>
 *   <script>
 *     wxJssdk.share({ title: 'My page', desc: 'Why it is worth a look', imgUrl: '/logo.jpg' });
 *   </script>
 *
 * The official JS-SDK (https://res.wx.qq.com/open/js/jweixin-1.6.0.js) is loaded when
 * window.wx is missing; a page may also load it itself, before this file.
 *
 * API (window.wxJssdk). Every call takes `success(result)` / `fail(error)` callbacks;
 * without them, and when the browser has Promise, it returns a Promise instead.
 *
 *   wxJssdk.ready([options | success])
 *     Signs the page and calls wx.config, once: later calls wait for the same result.
 *     `result` is {url, config, attempts}: the URL signed, the service's answer, and
 *     how many wx.config calls it took. Options (the first call's are kept):
 *       base         where the service answers, e.g. 'https://api.example.com'
 *                    (default '': the page's own origin). Another origin works
 *                    when the app lists this page's origin in its cors_origins;
 *                    otherwise put the service behind the page's host
 *                    (e.g. nginx location /wxJssdk/)
 *       app          app name: signs with /v1/apps/{app}/jssdk/config
 *                    (default: the short route /wxJssdk/getJssdk, the default app)
 *       jsApiList    APIs to ask for (default: the four share APIs)
 *       openTagList  open tags, e.g. ['wx-open-launch-weapp'] (default none)
 *       beta         wx.config's beta flag (default: true for WeChat Work apps)
 *       debug        wx.config's debug flag: WeChat alerts every result (default false)
 *       sdkUrl       the official JS-SDK to load when window.wx is missing
 *       timeout      ms to wait for the service and for WeChat's verdict (default 10000)
 *       onEvent      function (name, detail): what happens, for logs and demos, in
 *                    this order: 'sign' {url, attempt}; 'config' {url, appId,
 *                    timestamp, nonceStr, signature, attempt} (the service's answer,
 *                    before the SDK is needed); 'sdk' {ok, error} (the official
 *                    JS-SDK is there: once; or could not be loaded: each time it is
 *                    tried); then 'retry' {error, url}, 'ready' {url, attempts},
 *                    'fail' {error}, 'share' {api, ok, errMsg}, 'agentConfig' {ok, errMsg}
 *
 *   wxJssdk.share(card [, options])
 *     Waits for ready (with `options`), then sets the card of "send to chat" and
 *     "share to Moments": updateAppMessageShareData and updateTimelineShareData, or the
 *     older onMenuShareAppMessage and onMenuShareTimeline where the new ones are missing
 *     (old SDK or client). card: {title, desc, link, imgUrl, success, fail}; title
 *     defaults to document.title, desc to the page's meta description, link to
 *     location.href; link and imgUrl may be relative. `result` is {calls: [{api, ok,
 *     errMsg}]}.
 *
 *   wxJssdk.agentConfig(params [, options])
 *     WeChat Work: waits for ready, then calls wx.agentConfig with the `agentConfig`
 *     fields the service signed for the app, and params.jsApiList. Needs an app of kind
 *     "work" and WeChat Work's jwxwork-1.0.0.js (which defines wx.agentConfig).
 *
 *   wxJssdk.urlToSign()   the URL this page must be signed for, now.
 *   wxJssdk.state()       'idle', 'configuring', 'ready' or 'failed'.
 *
 * `error` is {errMsg, message}: errMsg as WeChat words it ('config:invalid signature',
 * 'config:invalid url domain'...) or 'sign:CODE' when the service refused, and a
 * message saying what to do about it.
 *
 * Rules it follows:
 *   - It signs the page first and loads the SDK after: the signature is there (in
 *     'config') even where the SDK cannot load, outside WeChat or when
 *     res.wx.qq.com is unreachable; the call then fails with 'sdk:unavailable'.
 *   - The URL signed is location.href without '#...', except on iOS, where WeChat
 *     checks the signature against the URL the page was entered with: there it is the
 *     URL at the time this file loaded, before a single-page app's router ran
 *     pushState. Load this file with a plain script tag in the entry HTML.
 *   - On Android, a single-page app that changed its URL is signed again for the new
 *     one on the next ready/share call.
 *   - On 'invalid signature' it fetches a fresh signature (for the current URL on
 *     Android, the entry URL on iOS) and calls wx.config once more; a second failure is
 *     reported through `fail`.
 *   - It owns wx.config and wx.error: a page using it should not call them itself.
 */
(function (window, document) {
  'use strict';

  if (window.wxJssdk) {
    return; // loaded twice: keep the first copy and its state
  }

  var SDK_URL = 'https://res.wx.qq.com/open/js/jweixin-1.6.0.js';
  var SHARE_APIS = [
    'updateAppMessageShareData',
    'updateTimelineShareData',
    'onMenuShareAppMessage',
    'onMenuShareTimeline'
  ];

  var ua = window.navigator.userAgent || '';
  var inWeChat = /micromessenger/i.test(ua);
  // iPadOS may present itself as a Mac; a Mac has no touch points.
  var onIOS = /\b(iphone|ipad|ipod)\b/i.test(ua) ||
    (/\bmacintosh\b/i.test(ua) && window.navigator.maxTouchPoints > 1);

  function withoutHash(url) {
    var i = url.indexOf('#');
    return i < 0 ? url : url.slice(0, i);
  }

  // Captured now, before any router code runs: WeChat iOS checks this one.
  var landingUrl = withoutHash(window.location.href);

  function urlToSign() {
    return onIOS ? landingUrl : withoutHash(window.location.href);
  }

  var settings = null; // the first ready() call's options, with the defaults
  var phase = 'idle'; // 'configuring', 'ready', 'failed'
  var waiters = []; // {success, fail} waiting for the current configuration
  var signedUrl = null; // the URL of the configuration that verified
  var verified = null; // its result
  var configCalls = 0; // wx.config calls made on this page
  var currentRound = null; // settles the wx.config call in flight (see applyConfig)

  function noop() {}

  function isFunction(f) {
    return typeof f === 'function';
  }

  function emit(name, detail) {
    if (settings && isFunction(settings.onEvent)) {
      try {
        settings.onEvent(name, detail);
      } catch (e) {
        // A broken logger must not break the page's share card.
      }
    }
  }

  function makeError(errMsg, message) {
    return { errMsg: errMsg, message: message };
  }

  // The official SDK, whichever global it registered.
  function sdk() {
    var wx = window.jWeixin || window.wx;
    return wx && isFunction(wx.config) ? wx : null;
  }

  // Runs `run(success, fail)`; hands the outcome to the caller's callbacks when it gave
  // any, else returns a Promise where there is one.
  function settle(run, callbacks) {
    callbacks = callbacks || {};
    var success = isFunction(callbacks.success) ? callbacks.success : null;
    var fail = isFunction(callbacks.fail) ? callbacks.fail : null;
    var Promise = window.Promise;
    if (success || fail || !isFunction(Promise)) {
      run(success || noop, fail || noop);
      return undefined;
    }
    var promise = new Promise(run);
    // A page that ignores the outcome (the one-call use) gets no "uncaught" noise; a
    // page chaining on it still sees the rejection.
    promise['catch'](noop);
    return promise;
  }

  function later(fn, value) {
    window.setTimeout(function () {
      fn(value);
    }, 0);
  }

  function configure(options) {
    if (settings) {
      return;
    }
    options = options || {};
    settings = {
      base: String(options.base || '').replace(/\/+$/, ''),
      app: options.app || null,
      jsApiList: options.jsApiList || SHARE_APIS,
      openTagList: options.openTagList || [],
      beta: options.beta,
      debug: !!options.debug,
      sdkUrl: options.sdkUrl || SDK_URL,
      timeout: options.timeout || 10000,
      onEvent: options.onEvent
    };
  }

  // --- ready -------------------------------------------------------------------------

  function ready(options) {
    if (isFunction(options)) {
      options = { success: options };
    }
    options = options || {};
    configure(options);
    return settle(function (success, fail) {
      var url = urlToSign();
      if (phase === 'ready' && url === signedUrl) {
        later(success, verified);
        return;
      }
      waiters.push({ success: success, fail: fail });
      if (phase !== 'configuring') {
        // First call, a failure being retried by a later call, or (Android) a
        // single-page app whose URL changed since it was signed.
        phase = 'configuring';
        start(url, 1);
      }
    }, options);
  }

  function finish(error, result) {
    var done = waiters;
    waiters = [];
    if (error) {
      phase = 'failed';
      emit('fail', { error: error });
      if (window.console && window.console.warn) {
        window.console.warn('wx-jssdk: ' + error.errMsg + ': ' + error.message);
      }
    } else {
      phase = 'ready';
      signedUrl = result.url;
      verified = result;
      emit('ready', { url: result.url, attempts: result.attempts });
    }
    for (var i = 0; i < done.length; i++) {
      if (error) {
        done[i].fail(error);
      } else {
        done[i].success(result);
      }
    }
  }

  // Signs first, then loads the SDK: the signature does not need the SDK, and a page
  // (or its developer) sees it even where the SDK cannot load (outside WeChat, or
  // when res.wx.qq.com is unreachable).
  function start(url, attempt) {
    emit('sign', { url: url, attempt: attempt });
    fetchConfig(url, function (error, config) {
      if (error) {
        finish(error);
        return;
      }
      emit('config', {
        url: url,
        appId: config.appId,
        timestamp: config.timestamp,
        nonceStr: config.nonceStr,
        signature: config.signature,
        attempt: attempt
      });
      loadSdk(function (error, wx) {
        if (error) {
          finish(error);
          return;
        }
        applyConfig(wx, config, url, attempt, function (error) {
          if (!error) {
            finish(null, { url: url, config: config, attempts: attempt });
          } else if (attempt === 1 && /invalid signature/i.test(error.errMsg)) {
            // The signature may be stale (ticket renewed, page kept open) or, on
            // Android, for a URL the page has left: sign again, once.
            var retryUrl = urlToSign();
            emit('retry', { error: error, url: retryUrl });
            start(retryUrl, 2);
          } else {
            finish(error);
          }
        });
      });
    });
  }

  // --- the official SDK ------------------------------------------------------------

  var sdkLoading = null; // callbacks waiting for the script tag we added
  var sdkSeen = false; // 'sdk' {ok: true} was emitted

  function loadSdk(callback) {
    var wx = sdk();
    if (wx) {
      sdkFound();
      callback(null, wx);
      return;
    }
    if (sdkLoading) {
      sdkLoading.push(callback);
      return;
    }
    sdkLoading = [callback];
    var script = document.createElement('script');
    script.src = settings.sdkUrl;
    script.async = true;
    function done() {
      var callbacks = sdkLoading;
      var wx = sdk();
      sdkLoading = null;
      var error = wx ? null : makeError('sdk:unavailable',
        'could not load the official JS-SDK from ' + settings.sdkUrl);
      if (wx) {
        sdkFound();
      } else {
        emit('sdk', { ok: false, error: error });
      }
      for (var i = 0; i < callbacks.length; i++) {
        callbacks[i](error, wx);
      }
    }
    script.onload = done;
    script.onerror = done;
    (document.head || document.getElementsByTagName('head')[0] || document.documentElement)
      .appendChild(script);
  }

  function sdkFound() {
    if (!sdkSeen) {
      sdkSeen = true;
      emit('sdk', { ok: true });
    }
  }

  // --- the service -----------------------------------------------------------------

  function signEndpoint() {
    var path = settings.app
      ? '/v1/apps/' + encodeURIComponent(settings.app) + '/jssdk/config'
      : '/wxJssdk/getJssdk';
    return settings.base + path;
  }

  function fetchConfig(url, callback) {
    var xhr = new window.XMLHttpRequest();
    var answered = false;
    function answer(error, config) {
      if (!answered) {
        answered = true;
        callback(error, config);
      }
    }
    var unreachable = makeError('sign:unreachable',
      'the signing service did not answer at ' + signEndpoint());
    xhr.open('GET', signEndpoint() + '?url=' + encodeURIComponent(url), true);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.timeout = settings.timeout;
    xhr.onload = function () {
      var body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (e) {
        body = null;
      }
      if (xhr.status === 200 && body && body.signature && body.appId) {
        answer(null, body);
      } else if (body && body.error) {
        // The service's JSON error: {"error": {"code", "message"}}.
        answer(makeError('sign:' + body.error.code, String(body.error.message)));
      } else {
        answer(makeError('sign:http_' + xhr.status,
          'unexpected answer from ' + signEndpoint() + ' (HTTP ' + xhr.status + ')'));
      }
    };
    xhr.onerror = function () {
      answer(unreachable);
    };
    xhr.ontimeout = xhr.onerror;
    xhr.send(null);
  }

  // --- wx.config ---------------------------------------------------------------------

  var HINTS = {
    'invalid signature': 'the page was signed for another URL or with an old ticket: ' +
      'sign location.href without #..., on iOS the URL the page was entered with',
    'invalid url domain': "add the page's domain to the account's JS interface safe domains",
    'permission denied': 'the account has no permission for one of the APIs in jsApiList'
  };

  function verdict(res) {
    var errMsg = String((res && (res.errMsg || res.err_msg)) || 'config:fail');
    var reason = errMsg.slice(errMsg.indexOf(':') + 1);
    return makeError(errMsg, HINTS[reason] || 'wx.config failed');
  }

  function applyConfig(wx, config, url, attempt, done) {
    if (!inWeChat) {
      // The SDK does nothing outside WeChat: say so instead of waiting forever.
      done(makeError('config:not in WeChat',
        'this is not WeChat (no MicroMessenger in the user agent): the page was signed, ' +
        'but only WeChat can verify it'));
      return;
    }
    var settled = false;
    var timer = window.setTimeout(function () {
      round(makeError('config:timeout', 'WeChat gave no verdict on wx.config within ' +
        settings.timeout + ' ms'));
    }, settings.timeout);
    function round(error) {
      if (!settled) {
        settled = true;
        currentRound = null;
        window.clearTimeout(timer);
        done(error);
      }
    }
    currentRound = round;
    // Registered again before every wx.config: the SDK keeps one handler, the last.
    wx.error(function (res) {
      if (currentRound) {
        currentRound(verdict(res));
      }
    });
    var params = {
      debug: settings.debug,
      beta: settings.beta === undefined ? !!config.agentConfig : !!settings.beta,
      appId: config.appId,
      timestamp: config.timestamp,
      nonceStr: config.nonceStr,
      signature: config.signature,
      // Copies: the SDK rewrites the names in these arrays in place.
      jsApiList: settings.jsApiList.slice(),
      openTagList: settings.openTagList.slice()
    };
    configCalls += 1;
    if (configCalls === 1) {
      // The SDK calls wx.error and then wx.ready when the verification fails, only
      // wx.ready when it passes: the error settles the round first.
      wx.ready(function () {
        round(null);
      });
      wx.config(params);
      return;
    }
    // After its first verdict the SDK runs wx.ready callbacks at once, whatever a new
    // wx.config then brings: learn this call's verdict from WeChat's answer to it.
    var watch = watchVerification(function () {
      round(null);
    });
    try {
      wx.config(params);
    } finally {
      if (!(watch && watch.stop())) {
        // No bridge call seen (an SDK that works differently): fall back to its ready.
        wx.ready(function () {
          round(null);
        });
      }
    }
  }

  // Wraps WeixinJSBridge.invoke for the span of one synchronous wx.config call, to see
  // WeChat's answer to the preVerifyJSAPI call it makes. `onAnswer` runs after the
  // SDK's own handler, which calls wx.error first when the verification failed.
  // Returns null when the bridge cannot be wrapped.
  function watchVerification(onAnswer) {
    var bridge = window.WeixinJSBridge;
    if (!bridge || !isFunction(bridge.invoke)) {
      return null;
    }
    var original = bridge.invoke;
    var seen = false;
    function invoke(name, args, callback) {
      if (name === 'preVerifyJSAPI' && !seen && isFunction(callback)) {
        seen = true;
        return original.call(bridge, name, args, function (res) {
          callback(res);
          onAnswer(res);
        });
      }
      return original.apply(bridge, arguments);
    }
    try {
      bridge.invoke = invoke;
    } catch (e) {
      return null;
    }
    if (bridge.invoke !== invoke) {
      return null; // read-only
    }
    return {
      stop: function () {
        if (bridge.invoke === invoke) {
          bridge.invoke = original;
        }
        return seen;
      }
    };
  }

  // --- share cards -------------------------------------------------------------------

  function absolute(url) {
    var a = document.createElement('a');
    a.href = url;
    return a.href;
  }

  function metaDescription() {
    var meta = document.querySelector && document.querySelector('meta[name="description"]');
    return (meta && meta.getAttribute('content')) || '';
  }

  function share(card, options) {
    card = card || {};
    var data = {
      title: card.title || document.title,
      desc: card.desc || metaDescription(),
      link: absolute(card.link || window.location.href),
      imgUrl: card.imgUrl ? absolute(card.imgUrl) : ''
    };
    return settle(function (success, fail) {
      ready(withCallbacks(options, go, fail));
      function go() {
        setCards(sdk(), data, function (calls) {
          var failed = [];
          for (var i = 0; i < calls.length; i++) {
            if (!calls[i].ok) {
              failed.push(calls[i].api + ': ' + calls[i].errMsg);
            }
          }
          if (failed.length) {
            var error = makeError('share:fail', failed.join('; '));
            error.calls = calls;
            fail(error);
          } else {
            success({ calls: calls });
          }
        });
      }
    }, card);
  }

  // `options` for ready(), with our own callbacks.
  function withCallbacks(options, success, fail) {
    var copy = copyOf(options || {});
    copy.success = success;
    copy.fail = fail;
    return copy;
  }

  // The update* APIs set the card now; the older onMenuShare* ones register it for
  // when the user shares, so they count as done once registered.
  function setCards(wx, data, done) {
    var calls = [];
    var pending = 2;
    function record(api, ok, errMsg) {
      calls.push({ api: api, ok: ok, errMsg: errMsg });
      emit('share', { api: api, ok: ok, errMsg: errMsg });
      pending -= 1;
      if (pending === 0) {
        done(calls);
      }
    }
    var pairs = [
      ['updateAppMessageShareData', 'onMenuShareAppMessage',
        { title: data.title, desc: data.desc, link: data.link, imgUrl: data.imgUrl }],
      ['updateTimelineShareData', 'onMenuShareTimeline',
        { title: data.title, link: data.link, imgUrl: data.imgUrl }]
    ];
    for (var i = 0; i < pairs.length; i++) {
      setCard(wx, pairs[i][0], pairs[i][1], pairs[i][2], record);
    }
  }

  function setCard(wx, api, legacy, params, record) {
    function useLegacy() {
      if (isFunction(wx[legacy])) {
        wx[legacy](copyOf(params));
        record(legacy, true, legacy + ':ok');
      } else {
        record(api, false, api + ':missing from the JS-SDK');
      }
    }
    if (!isFunction(wx[api])) {
      useLegacy();
      return;
    }
    var call = copyOf(params);
    call.success = function (res) {
      record(api, true, (res && res.errMsg) || api + ':ok');
    };
    call.fail = function (res) {
      var errMsg = (res && res.errMsg) || api + ':fail';
      if (/not exist|not support/i.test(errMsg)) {
        useLegacy(); // an SDK newer than the client
      } else {
        record(api, false, errMsg);
      }
    };
    wx[api](call);
  }

  function copyOf(object) {
    var copy = {};
    for (var key in object) {
      if (Object.prototype.hasOwnProperty.call(object, key)) {
        copy[key] = object[key];
      }
    }
    return copy;
  }

  // --- WeChat Work -------------------------------------------------------------------

  function agentConfig(params, options) {
    params = params || {};
    return settle(function (success, fail) {
      ready(withCallbacks(options, function (result) {
        var signed = result.config.agentConfig;
        var wx = sdk();
        if (!signed) {
          fail(makeError('agentConfig:unsupported', 'the service signed no agentConfig: ' +
            'the app is not a WeChat Work app (kind = "work")'));
          return;
        }
        if (!isFunction(wx.agentConfig)) {
          fail(makeError('agentConfig:missing', 'wx.agentConfig is missing: load WeChat ' +
            "Work's jwxwork-1.0.0.js after the JS-SDK"));
          return;
        }
        wx.agentConfig({
          corpid: signed.corpid,
          agentid: signed.agentid,
          timestamp: signed.timestamp,
          nonceStr: signed.nonceStr,
          signature: signed.signature,
          jsApiList: (params.jsApiList || []).slice(),
          success: function (res) {
            emit('agentConfig', { ok: true, errMsg: res && res.errMsg });
            success({ config: signed, res: res });
          },
          fail: function (res) {
            var error = verdict(res);
            emit('agentConfig', { ok: false, errMsg: error.errMsg });
            fail(error);
          }
        });
      }, fail));
    }, params);
  }

  window.wxJssdk = {
    ready: ready,
    share: share,
    agentConfig: agentConfig,
    urlToSign: urlToSign,
    state: function () {
      return phase;
    }
  };
})(window, document);
