// The demo page's script: sets a share card with wx-jssdk.js and shows each step in
// the page (#status, #signed-url, #shares, #log). Plain ES5 like the helper. Every
// text goes in with textContent: URLs and error messages are never parsed as HTML.
(function () {
  'use strict';

  var status = document.getElementById('status');
  var signedUrl = document.getElementById('signed-url');
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
          line('signed: appId ' + detail.appId + ', timestamp ' + detail.timestamp +
            ', signature ' + detail.signature);
          break;
        case 'retry':
          line(detail.error.errMsg + ': signing again for ' + detail.url);
          break;
        case 'ready':
          line('config ok after ' + detail.attempts + ' wx.config call(s)');
          break;
        case 'fail':
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
        signedUrl.textContent = wxJssdk.urlToSign();
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
