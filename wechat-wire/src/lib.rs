//! WeChat's wire format: what travels over HTTP between a client of the WeChat API and
//! WeChat itself (`api.weixin.qq.com` for official accounts, `qyapi.weixin.qq.com` for
//! WeChat Work).
//!
//! Two programs in this workspace speak it from opposite ends: the service's API
//! client (`wx_jssdk::wechat::client`) asks, and the sandbox (`wx_sandbox`) answers as
//! WeChat would. While each spelled the protocol out for itself, the two copies could
//! drift apart, and each had its own names for the same things (two ticket-kind enums).
//! So the facts are written once, here, in one place to check against WeChat's
//! documentation: the endpoint [`path`]s, the [`TicketKind`]s with the `type` values
//! that ask for them and [where each is fetched](TicketRequest), the [`errcode`]s, the
//! JSON [`Answer`] and the [`StableTokenRequest`] body.
//!
//! The price of sharing: a slip here is made by both sides alike, and no test between
//! the client and the sandbox can see it. So the tests of this crate, and the
//! sandbox's own, spell the wire out literally, as WeChat documents it.
//!
//! Only facts of the protocol, no decisions: what to do about an errcode (retry, drop
//! the token, tell the operator) is the client's business, and how to be awkward the way
//! WeChat is, the sandbox's. No I/O and no HTTP stack either, so that both can use it
//! (and the fuzzers, through the client's parser). The reference for all of it is
//! `shared/wechat-api.md`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

pub mod path {
    //! Endpoint paths, relative to an API base. The base is the service's setting
    //! (`wechat.api_base`, `wechat.work_api_base`) rather than part of the path so that a
    //! sandbox can be put in WeChat's place; and since the paths of the two APIs do not
    //! collide, one sandbox can serve both bases.

    /// Official accounts, `GET ?grant_type=client_credential&appid=…&secret=…`: every
    /// call mints a new access_token, and the previous one stops working about 5 minutes
    /// later (then [`INVALID_CREDENTIAL`](crate::errcode::INVALID_CREDENTIAL)).
    pub const TOKEN: &str = "/cgi-bin/token";
    /// Official accounts, `POST` with a JSON [`StableTokenRequest`](crate::StableTokenRequest):
    /// the account's current token, independent of [`TOKEN`]'s, with the time it has
    /// left; `force_refresh` mints a new one.
    pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
    /// Official accounts, `GET ?access_token=…&type=…`: the JS-SDK ticket (`type=jsapi`)
    /// and the card api_ticket (`type=wx_card`).
    pub const GET_TICKET: &str = "/cgi-bin/ticket/getticket";
    /// WeChat Work, `GET ?corpid=…&corpsecret=…`: the access_token of the application
    /// whose secret it is (the corp has one secret per application).
    pub const WORK_TOKEN: &str = "/cgi-bin/gettoken";
    /// WeChat Work, `GET ?access_token=…`: the corp's jsapi ticket (`wx.config`). No
    /// `type`: the endpoint serves that one kind.
    pub const WORK_JSAPI_TICKET: &str = "/cgi-bin/get_jsapi_ticket";
    /// WeChat Work, `GET ?access_token=…&type=agent_config`: the application's agent
    /// ticket (`wx.agentConfig`).
    pub const WORK_TICKET: &str = "/cgi-bin/ticket/get";
}

/// The one `grant_type` of [`path::TOKEN`] and [`path::STABLE_TOKEN`]: the account
/// authenticates with its own appid and secret. Any other value is refused
/// ([`errcode::INVALID_GRANT_TYPE`]).
pub const CLIENT_CREDENTIAL: &str = "client_credential";

pub mod errcode {
    //! The `errcode` values either side acts on. WeChat answers an API error with HTTP
    //! 200 and `{"errcode": N, "errmsg": "…"}`: the errcode says what went wrong, not
    //! the status, and the errmsg is free text (with a request id) that nothing should
    //! match on.

    /// System busy: nothing is wrong with the request; try again a little later.
    pub const SYSTEM_BUSY: i64 = -1;
    /// Success. Official accounts' token answers leave it out; WeChat Work's answers and
    /// every ticket answer state it.
    pub const OK: i64 = 0;
    /// Invalid credential: the access_token is not the latest (replaced by a newer one,
    /// after its grace period) or was invalidated otherwise.
    pub const INVALID_CREDENTIAL: i64 = 40001;
    /// The `grant_type` is not [`client_credential`](crate::CLIENT_CREDENTIAL).
    pub const INVALID_GRANT_TYPE: i64 = 40002;
    /// No account has this appid (for WeChat Work: no corp has this corpid).
    pub const INVALID_APPID: i64 = 40013;
    /// The access_token is not one WeChat issued.
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    /// Invalid arguments: for a ticket, a `type` the endpoint does not serve.
    pub const INVALID_ARGS: i64 = 40097;
    /// The secret is not the appid's (for WeChat Work: not one of the corp's).
    pub const INVALID_APPSECRET: i64 = 40125;
    /// The caller's IP address is not on the account's IP whitelist (set in the WeChat
    /// console): the request was refused before it was read.
    pub const IP_NOT_WHITELISTED: i64 = 40164;
    /// The request has no access_token.
    pub const ACCESS_TOKEN_MISSING: i64 = 41001;
    /// The request has no appid (corpid).
    pub const APPID_MISSING: i64 = 41002;
    /// The request has no secret.
    pub const APPSECRET_MISSING: i64 = 41004;
    /// The access_token has expired.
    pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
    /// The account's daily quota of calls to this API is used up, until the next day (or
    /// a reset in the console, itself limited).
    pub const QUOTA_EXCEEDED: i64 = 45009;
    /// The request body is not the JSON the endpoint expects.
    pub const DATA_FORMAT_ERROR: i64 = 47001;
}

/// The tickets WeChat hands out for page-side signatures, named by what a page does
/// with them.
///
/// One enum for both APIs: a WeChat Work corp's jsapi ticket is the same kind as an
/// official account's (both sign `wx.config`, with the same formula), fetched elsewhere.
/// Which of the two a ticket is follows from whose it is, a corp's or an account's, and
/// so from where it was fetched ([`TicketKind::official_account_request`],
/// [`TicketKind::work_request`]), not from a kind of its own.
///
/// Serialised as the `type` value that asks for it ([`TicketKind::type_param`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TicketKind {
    /// `wx.config`: an official account's jsapi_ticket, or a WeChat Work corp's.
    #[serde(rename = "jsapi")]
    Jsapi,
    /// `wx.chooseCard` / `wx.addCard`: an official account's card api_ticket. WeChat
    /// Work has none.
    #[serde(rename = "wx_card")]
    Card,
    /// `wx.agentConfig`: a WeChat Work application's agent ticket. Official accounts
    /// have none.
    #[serde(rename = "agent_config")]
    Agent,
}

/// Where a ticket is fetched: the path, on the API base of the app's kind, and the
/// `type` query parameter if the endpoint takes one. Every ticket request also carries
/// the `access_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketRequest {
    pub path: &'static str,
    /// `None` where the endpoint serves one kind and reads no `type`.
    pub type_param: Option<&'static str>,
}

impl TicketKind {
    pub const ALL: [Self; 3] = [Self::Jsapi, Self::Card, Self::Agent];

    /// The `type` query parameter that asks for this kind, where the endpoint takes one.
    pub const fn type_param(self) -> &'static str {
        match self {
            Self::Jsapi => "jsapi",
            Self::Card => "wx_card",
            Self::Agent => "agent_config",
        }
    }

    /// The kind a `type` value names.
    pub fn from_type_param(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.type_param() == value)
    }

    /// Where an official account fetches this kind; `None`: official accounts have no
    /// such ticket.
    pub const fn official_account_request(self) -> Option<TicketRequest> {
        match self {
            Self::Jsapi | Self::Card => Some(TicketRequest {
                path: path::GET_TICKET,
                type_param: Some(self.type_param()),
            }),
            Self::Agent => None,
        }
    }

    /// Where a WeChat Work application fetches this kind; `None`: WeChat Work has no
    /// such ticket.
    pub const fn work_request(self) -> Option<TicketRequest> {
        match self {
            Self::Jsapi => Some(TicketRequest {
                path: path::WORK_JSAPI_TICKET,
                type_param: None,
            }),
            Self::Agent => Some(TicketRequest {
                path: path::WORK_TICKET,
                type_param: Some(self.type_param()),
            }),
            Self::Card => None,
        }
    }

    /// The kind a request of `path` with the `type` value `type_param` asks for, as
    /// WeChat reads it: read back from [`official_account_request`] and [`work_request`],
    /// so that what is asked for and what is answered cannot disagree. `None`: the
    /// endpoint serves no such kind (WeChat answers [`errcode::INVALID_ARGS`]). An
    /// endpoint that serves one kind ignores `type`.
    ///
    /// [`official_account_request`]: TicketKind::official_account_request
    /// [`work_request`]: TicketKind::work_request
    pub fn requested_at(path: &str, type_param: Option<&str>) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| {
            [kind.official_account_request(), kind.work_request()]
                .into_iter()
                .flatten()
                .any(|request| {
                    request.path == path
                        && (request.type_param.is_none() || request.type_param == type_param)
                })
        })
    }
}

/// WeChat's JSON answer, every endpoint's in one shape: an error carries `errcode` and
/// `errmsg`; a success, the value asked for (`access_token` or `ticket`) and its
/// `expires_in`, and (from every endpoint but official accounts' token ones)
/// `errcode: 0` with `errmsg: "ok"`.
///
/// One struct rather than one per endpoint because the answers differ only in which
/// fields are present, and a client must read an error from any endpoint the same way.
/// A missing field is `None`, and a serialised answer leaves it out, as WeChat does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// `None`: absent, which means success ([`Answer::code`]). An explicit `null` is
    /// refused: it is not WeChat's JSON, and must not pass for a success.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub errcode: Option<i64>,
    /// Free text for people (it carries a request id): never match on it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub errmsg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The value's lifetime in seconds from now, as WeChat states it (7200). A value
    /// handed out again comes with a fresh `expires_in`, yet still dies at its first
    /// expiry: believing it is a cache's classic mistake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

impl Answer {
    /// An error answer.
    pub fn error(errcode: i64, errmsg: impl Into<String>) -> Self {
        Self {
            errcode: Some(errcode),
            errmsg: Some(errmsg.into()),
            ..Self::default()
        }
    }

    /// An official account's token answer, `{"access_token","expires_in"}`: no errcode.
    pub fn access_token(token: impl Into<String>, expires_in: u64) -> Self {
        Self {
            access_token: Some(token.into()),
            expires_in: Some(expires_in),
            ..Self::default()
        }
    }

    /// A ticket answer: `{"errcode":0,"errmsg":"ok","ticket","expires_in"}`.
    pub fn ticket(ticket: impl Into<String>, expires_in: u64) -> Self {
        Self {
            ticket: Some(ticket.into()),
            expires_in: Some(expires_in),
            ..Self::default()
        }
        .ok()
    }

    /// The same success stating `errcode: 0` and `errmsg: "ok"`, as WeChat Work's
    /// answers and every ticket answer do.
    pub fn ok(self) -> Self {
        Self {
            errcode: Some(errcode::OK),
            errmsg: Some("ok".into()),
            ..self
        }
    }

    /// The errcode, [`errcode::OK`] when the answer has none.
    pub fn code(&self) -> i64 {
        self.errcode.unwrap_or(errcode::OK)
    }
}

/// A field that may be absent (`#[serde(default)]` makes it `None`) but not `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The JSON body of `POST` [`path::STABLE_TOKEN`].
///
/// Every field is optional because that is how WeChat reads the body: a missing appid
/// or secret has an errcode of its own ([`errcode::APPID_MISSING`],
/// [`errcode::APPSECRET_MISSING`]), a missing `grant_type` is a wrong one, and a missing
/// `force_refresh` means `false`. A client sends all four ([`StableTokenRequest::new`]).
/// The strings are borrowed when sent, so that the secret is not copied for a request.
///
/// `Debug` leaves the secret out.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableTokenRequest<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Cow<'a, str>>,
    /// `true` mints a new token (and starts the previous one's grace period); WeChat
    /// allows it 20 times a day, at least 30 s apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_refresh: Option<bool>,
}

impl<'a> StableTokenRequest<'a> {
    /// The request a client sends: every field stated.
    pub fn new(appid: &'a str, secret: &'a str, force_refresh: bool) -> Self {
        Self {
            grant_type: Some(CLIENT_CREDENTIAL.into()),
            appid: Some(appid.into()),
            secret: Some(secret.into()),
            force_refresh: Some(force_refresh),
        }
    }
}

impl fmt::Debug for StableTokenRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StableTokenRequest")
            .field("grant_type", &self.grant_type)
            .field("appid", &self.appid)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("force_refresh", &self.force_refresh)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_ticket_kind_serialises_as_its_type_value_and_is_read_back_from_it() {
        for kind in TicketKind::ALL {
            let name = kind.type_param();
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<TicketKind>(json!(name)).unwrap(),
                kind
            );
            assert_eq!(TicketKind::from_type_param(name), Some(kind));
        }
        assert_eq!(TicketKind::from_type_param("card"), None);
    }

    /// The requests as WeChat documents them, spelled out rather than built from the
    /// constants: a slip in a constant would be shared by the client and the sandbox.
    #[test]
    fn the_requests_are_the_ones_wechat_documents() {
        let documented = [
            (
                TicketKind::Jsapi.official_account_request(),
                "/cgi-bin/ticket/getticket?type=jsapi",
            ),
            (
                TicketKind::Card.official_account_request(),
                "/cgi-bin/ticket/getticket?type=wx_card",
            ),
            (
                TicketKind::Jsapi.work_request(),
                "/cgi-bin/get_jsapi_ticket",
            ),
            (
                TicketKind::Agent.work_request(),
                "/cgi-bin/ticket/get?type=agent_config",
            ),
        ];
        for (request, url) in documented {
            let spelled = request.map(|r| match r.type_param {
                Some(t) => format!("{}?type={t}", r.path),
                None => r.path.to_string(),
            });
            assert_eq!(spelled.as_deref(), Some(url));
        }
        assert_eq!(
            [
                path::TOKEN,
                path::STABLE_TOKEN,
                path::WORK_TOKEN,
                CLIENT_CREDENTIAL
            ],
            [
                "/cgi-bin/token",
                "/cgi-bin/stable_token",
                "/cgi-bin/gettoken",
                "client_credential"
            ]
        );
    }

    #[test]
    fn every_ticket_request_asks_for_its_own_kind_and_no_other() {
        for kind in TicketKind::ALL {
            for request in [kind.official_account_request(), kind.work_request()]
                .into_iter()
                .flatten()
            {
                assert_eq!(
                    TicketKind::requested_at(request.path, request.type_param),
                    Some(kind),
                    "{request:?}"
                );
            }
        }
        let getticket = |t| TicketKind::requested_at(path::GET_TICKET, t);
        assert_eq!(
            getticket(Some("agent_config")),
            None,
            "not an official kind"
        );
        assert_eq!(getticket(None), None, "getticket needs a type");
        let agent = |t| TicketKind::requested_at(path::WORK_TICKET, t);
        assert_eq!(agent(Some("jsapi")), None);
        assert_eq!(
            TicketKind::requested_at(path::WORK_JSAPI_TICKET, Some("anything")),
            Some(TicketKind::Jsapi),
            "one kind: the type is not read"
        );
        assert_eq!(TicketKind::Card.work_request(), None);
        assert_eq!(TicketKind::Agent.official_account_request(), None);
    }

    #[test]
    fn answers_serialise_as_wechat_writes_them() {
        assert_eq!(
            serde_json::to_value(Answer::access_token("A", 7200)).unwrap(),
            json!({ "access_token": "A", "expires_in": 7200 })
        );
        assert_eq!(
            serde_json::to_value(Answer::ticket("T", 7200)).unwrap(),
            json!({ "errcode": 0, "errmsg": "ok", "ticket": "T", "expires_in": 7200 })
        );
        assert_eq!(
            serde_json::to_value(Answer::error(errcode::SYSTEM_BUSY, "busy")).unwrap(),
            json!({ "errcode": -1, "errmsg": "busy" })
        );
    }

    #[test]
    fn an_absent_errcode_is_success_and_a_null_one_is_not_wechat() {
        let answer: Answer =
            serde_json::from_str(r#"{"access_token":"A","expires_in":1}"#).unwrap();
        assert_eq!((answer.code(), answer.errcode), (errcode::OK, None));
        for body in [
            r#"{"errcode":null}"#,
            r#"{"errmsg":null}"#,
            r#"{"errcode":"0"}"#,
        ] {
            assert!(serde_json::from_str::<Answer>(body).is_err(), "{body}");
        }
        let answer: Answer = serde_json::from_str(r#"{"errcode":40001,"x":1}"#).unwrap();
        assert_eq!(
            answer.code(),
            errcode::INVALID_CREDENTIAL,
            "unknown fields are ignored"
        );
    }

    #[test]
    fn a_stable_token_request_states_every_field_and_debug_hides_the_secret() {
        let request = StableTokenRequest::new("wx1", "s3cret", false);
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"grant_type":"client_credential","appid":"wx1","secret":"s3cret","force_refresh":false}"#
        );
        assert!(!format!("{request:?}").contains("s3cret"));
        let empty: StableTokenRequest = serde_json::from_slice(b"{}").unwrap();
        assert_eq!(empty, StableTokenRequest::default());
        let parsed: StableTokenRequest =
            serde_json::from_value(serde_json::to_value(&request).unwrap()).unwrap();
        assert_eq!(parsed, request);
    }
}
