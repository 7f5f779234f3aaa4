"""wechatpy, the Python WeChat SDK, pointed at the service's gateway exactly as the
README's "For other backends" says: the three-line subclass. Run by
tests/api/gateway.rs with the service and the sandbox behind it.

Arguments: the service's address (http://127.0.0.1:PORT), the AppID, the secret, and
what to do: `all` (the token, the jsapi ticket, a menu and a user call, forwarded to
the sandbox, which echoes them) or `menu` (the token and the menu call only). Prints,
as JSON, what the SDK got. Any SDK error fails the script (and the test).
"""

import json
import sys

from wechatpy import WeChatClient

BASE, APPID, SECRET, WHAT = sys.argv[1:5]


class GatewayClient(WeChatClient):
    API_BASE_URL = BASE + "/cgi-bin/"

    def fetch_access_token(self):
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


# Without wechatpy's own retry on 40001 (fetch a token, send again), so that a refused
# token the gateway did not heal fails here instead of being hidden by the SDK.
client = GatewayClient(APPID, SECRET, auto_retry=False)
got = {"token": client.access_token, "menu": client.menu.get()}
if WHAT == "all":
    got["ticket"] = client.jsapi.get_jsapi_ticket()
    got["user"] = client.user.get("o-wechatpy", lang="zh_CN")
print(json.dumps(got))
