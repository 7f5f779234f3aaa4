// co-wechat-api, the Node.js WeChat SDK, pointed at the service's gateway exactly as
// the README's "For other backends" says: its prefix properties. Run by
// tests/api/gateway.rs with the service and the sandbox behind it.
//
// Arguments: the service's address (http://127.0.0.1:PORT), the AppID, the secret, and
// what to do: `all` (the token, the jsapi ticket, a menu and a user call, forwarded to
// the sandbox, which echoes them) or `menu` (the token and the menu call only). Prints,
// as JSON, what the SDK got. Any SDK error fails the script (and the test).
'use strict';

const WechatAPI = require('co-wechat-api');

async function main() {
  const [base, appid, secret, what] = process.argv.slice(2);
  const api = new WechatAPI(appid, secret);
  api.prefix = `${base}/cgi-bin/`;
  api.fileServerPrefix = `${base}/cgi-bin/`;
  api.merchantPrefix = `${base}/merchant/`;
  api.customservicePrefix = `${base}/customservice/`;
  api.wxaPrefix = `${base}/wxa/`;
  // Without co-wechat-api's own retry on 40001 (fetch a token, send again), so that a
  // refused token the gateway did not heal fails here instead of being hidden.
  const request = api.request.bind(api);
  api.request = (url, opts) => request(url, opts, 0);

  const got = { token: (await api.ensureAccessToken()).accessToken, menu: await api.getMenu() };
  if (what === 'all') {
    got.ticket = (await api.getTicket('jsapi')).ticket;
    got.user = await api.getUser({ openid: 'o-co-wechat-api', lang: 'zh_CN' });
  }
  console.log(JSON.stringify(got));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
