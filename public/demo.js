// The demo page's script: sets a share card with wx-jssdk.js and shows each step in
// the page, in the order the helper takes them: the signature (#signed), the official
// JS-SDK (#sdk), wx.config's verdict (#status) and the share calls (#shares); #log
// lists every event. Plain ES5 like the helper. Every text goes in with textContent:
// URLs and error messages are never parsed as HTML.
(function () {
  'use strict';

  var status = document.getElementById('status');
  var signed = document.getElementById('signed');
  var sdk = document.getElementById('sdk');
  var shares = document.getElementById('shares');
  var log = document.getElementById('log');
  var route = 1;

  function line(text) {
    var item = document.createElement('li');
    item.textContent = text;
    log.appendChild(item);
  }

  function setStatus(state, text) {
    status.setAttribute('data-state', state);
    status.textContent = text;
  }

  // The service's answer, field by field (the 'config' event).
  function showSignature(detail) {
    var fields = signed.querySelectorAll('[data-field]');
    for (var i = 0; i < fields.length; i++) {
      fields[i].textContent = String(detail[fields[i].getAttribute('data-field')]);
    }
    signed.setAttribute('data-state', 'ok');
  }

  function showSdk(state, text) {
    sdk.setAttribute('data-state', state);
    sdk.textContent = text;
  }

  if (!window.wxJssdk) {
    setStatus('error', 'wx-jssdk.js did not load');
    return;
  }

  var options = {
    onEvent: function (name, detail) {
      switch (name) {
        case 'sign':
          line('asked the service to sign ' + detail.url + ' (attempt ' + detail.attempt + ')');
          break;
        case 'config':
          showSignature(detail);
          line('signed: appId ' + detail.appId + ', timestamp ' + detail.timestamp +
            ', signature ' + detail.signature);
          break;
        case 'sdk':
          if (detail.ok) {
            showSdk('ok', 'loaded');
            line('official JS-SDK loaded');
          } else {
            showSdk('error', 'unavailable: ' + detail.error.message +
              '. The signature above does not need it; wx.config does.');
            line('official JS-SDK unavailable: ' + detail.error.message);
          }
          break;
        case 'retry':
          line(detail.error.errMsg + ': signing again for ' + detail.url);
          break;
        case 'ready':
          line('config ok after ' + detail.attempts + ' wx.config call(s)');
          break;
        case 'fail':
          if (sdk.getAttribute('data-state') === 'pending') {
            showSdk('skipped', 'not tried: the page could not be signed');
          }
          line('failed: ' + detail.error.errMsg + ' (' + detail.error.message + ')');
          break;
        case 'share':
          line(detail.api + ': ' + detail.errMsg);
          break;
        default:
          line(name);
      }
    }
  };

  function shareCard() {
    setStatus('pending', 'configuring…');
    shares.textContent = '';
    wxJssdk.share({
      title: document.title + (route > 1 ? ' (route ' + route + ')' : ''),
      desc: 'A share card set by wx-jssdk.js',
      link: window.location.href,
      success: function (result) {
        setStatus('ok', 'config:ok');
        for (var i = 0; i < result.calls.length; i++) {
          var call = result.calls[i];
          var item = document.createElement('li');
          item.setAttribute('data-api', call.api);
          item.textContent = call.api + ': ' + call.errMsg;
          shares.appendChild(item);
        }
      },
      fail: function (error) {
        setStatus('error', error.errMsg + ': ' + error.message);
      }
    }, options);
  }

  // A single-page app's navigation: on Android the page is signed again for the new
  // URL; on iOS the entry URL stays the one to sign.
  document.getElementById('navigate').onclick = function () {
    route += 1;
    window.history.pushState({ route: route }, '', '?route=' + route);
    line('pushState: now at ' + window.location.href);
    shareCard();
  };

  shareCard();
})();
