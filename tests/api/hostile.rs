//! Hostile requests against the real server (Redis and the sandbox included), as a
//! table: each row says how the request is sent, byte for byte, and what must come
//! back. After every row the process must still answer `/healthz`, no refused request
//! may have reached WeChat, and no answer may carry a secret, a file of the repository
//! or a header smuggled in through a parameter.
//!
//! Requests go over a raw TCP connection rather than an HTTP client: clients fix up
//! exactly what these rows need to send broken (`..` segments, invalid UTF-8, unknown
//! methods, huge headers, bodies that do not match their content type).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wx_sandbox::CallCounts;

use crate::helpers::{spawn_app_with, Options, TestApp, SECRET, SERVER_TOKEN};

const ADMIN_KEY: &str = "hostile-admin-key-0123456789";
/// A whole row (request and answer) must finish within this: a hang is a failure.
const ROW_TIMEOUT: Duration = Duration::from_secs(10);

const SIGN: &str = "/wxJssdk/getJssdk";
const SIGN_V1: &str = "/v1/apps/default/jssdk/config";
const CARD: &str = "/v1/apps/default/card/sign";
const VERIFY: &str = "/wxJssdk";
const VERIFY_V1: &str = "/v1/apps/default/verify";
const TOKEN: &str = "/v1/apps/default/access_token";
const INVALIDATE: &str = "/v1/apps/default/access_token/invalidate";

/// One request, as it goes on the wire.
struct Request {
    method: &'static str,
    /// The request target, sent as is (no normalisation, no encoding).
    target: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Body,
}

enum Body {
    None,
    /// With `Content-Length`.
    Sized(Vec<u8>),
    /// `Transfer-Encoding: chunked`, in chunks of this many bytes (no length up front).
    Chunked(Vec<u8>, usize),
}

impl Request {
    fn new(method: &'static str, target: impl Into<Vec<u8>>) -> Self {
        Self {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Body::None,
        }
    }

    fn get(target: impl Into<Vec<u8>>) -> Self {
        Self::new("GET", target)
    }

    fn post(target: impl Into<Vec<u8>>, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", target)
            .header("content-type", content_type)
            .sized(body)
    }

    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn sized(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Sized(body.into());
        self
    }

    fn chunked(mut self, body: impl Into<Vec<u8>>, chunk: usize) -> Self {
        self.body = Body::Chunked(body.into(), chunk);
        self
    }

    fn bearer(self, key: impl Into<Vec<u8>>) -> Self {
        let mut value = b"Bearer ".to_vec();
        value.extend(key.into());
        self.header("authorization", value)
    }

    fn head_bytes(&self) -> Vec<u8> {
        let mut head = Vec::new();
        head.extend_from_slice(self.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(&self.target);
        head.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Body::None => {}
            Body::Sized(body) => {
                head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes())
            }
            Body::Chunked(..) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Sized(body) => body.clone(),
            Body::Chunked(body, size) => {
                let mut wire = Vec::new();
                for chunk in body.chunks(*size) {
                    wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    wire.extend_from_slice(chunk);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"0\r\n\r\n");
                wire
            }
        }
    }
}

/// What came back.
struct Answer {
    status: u16,
    /// Lowercase names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` and reads the answer until the server closes the connection. The
/// body is written while the answer is read, as a client that does not wait would:
/// the server may answer (and stop reading) before it has all of it.
async fn send(address: &str, request: &Request) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&request.head_bytes())
        .await
        .map_err(|e| format!("write the head: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let body = request.body_bytes();
    let writing = tokio::spawn(async move {
        // The server may refuse the body half-way: a failed write is no failure.
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer
    });
    let mut raw = Vec::new();
    let read = reader.read_to_end(&mut raw).await;
    let _ = writing.await;
    if let Err(e) = read {
        if raw.is_empty() {
            return Err(format!("read the answer: {e}"));
        }
    }
    parse_answer(&raw, request.method == "HEAD")
}

fn parse_answer(raw: &[u8], head_request: bool) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete answer head in {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head_request {
        body.clear();
    } else if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = wire.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&wire[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || wire.len() < line_end + 2 + size {
            break;
        }
        body.extend_from_slice(&wire[line_end + 2..line_end + 2 + size]);
        wire = &wire[(line_end + 4 + size).min(wire.len())..];
    }
    body
}

/// What a row expects.
struct Case {
    name: &'static str,
    request: Request,
    status: u16,
    /// The JSON error code; `None`: the answer is not a JSON error (a success, a HEAD).
    code: Option<&'static str>,
}

fn case(name: &'static str, request: Request, status: u16, code: Option<&'static str>) -> Case {
    Case {
        name,
        request,
        status,
        code,
    }
}

fn sign_query(url: &str) -> String {
    format!("{SIGN}?url={url}")
}

fn cases() -> Vec<Case> {
    let big_json = format!(
        r#"{{"url": "https://a.example.com/", "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    // 40 and 50 KB: within the longest request target the HTTP layer takes (64 KiB).
    let many_params = "p=1&".repeat(10_000);
    let many_urls = "url=&".repeat(10_000);
    let mut cases = vec![
        // Bodies.
        case(
            "1 MiB JSON body",
            Request::post(SIGN, "application/json", big_json.clone()),
            413,
            Some("body_too_large"),
        ),
        case(
            "1 MiB JSON body, chunked (no length up front)",
            Request::new("POST", SIGN)
                .header("content-type", "application/json")
                .chunked(big_json.clone(), 16 * 1024),
            413,
            Some("body_too_large"),
        ),
        case(
            "1 MiB body on the invalidate route, with the key",
            Request::post(INVALIDATE, "application/json", big_json).bearer(ADMIN_KEY),
            413,
            Some("body_too_large"),
        ),
        case(
            "invalid UTF-8 in a JSON body",
            Request::post(SIGN, "application/json", b"{\"url\": \"https://a.example.com/\xff\"}".to_vec()),
            400,
            Some("invalid_body"),
        ),
        case(
            "invalid UTF-8 in a form body",
            Request::post(
                SIGN,
                "application/x-www-form-urlencoded",
                "url=https%3A%2F%2Fa.example.com%2F%FF",
            ),
            400,
            Some("invalid_body"),
        ),
        case(
            "text/xml body",
            Request::post(SIGN, "text/xml", "<xml><url>https://a.example.com/</url></xml>"),
            400,
            Some("invalid_body"),
        ),
        case(
            "multipart body",
            Request::post(
                SIGN_V1,
                "multipart/form-data; boundary=XyZ",
                "--XyZ\r\ncontent-disposition: form-data; name=\"url\"\r\n\r\nhttps://a.example.com/\r\n--XyZ--\r\n",
            ),
            400,
            Some("invalid_body"),
        ),
        case(
            "a JSON array as body",
            Request::post(SIGN, "application/json", r#"["https://a.example.com/"]"#),
            400,
            Some("invalid_body"),
        ),
        case(
            "a JSON number as body",
            Request::post(SIGN, "application/json", "42"),
            400,
            Some("invalid_body"),
        ),
        case(
            "JSON null as body",
            Request::post(SIGN, "application/json", "null"),
            400,
            Some("invalid_body"),
        ),
        case(
            "10 000 nested arrays",
            Request::post(SIGN, "application/json", "[".repeat(10_000)),
            400,
            Some("invalid_body"),
        ),
        case(
            "5 000 nested objects",
            Request::post(SIGN, "application/json", r#"{"url":"#.repeat(5_000)),
            400,
            Some("invalid_body"),
        ),
        case(
            "card: a JSON array as body",
            Request::post(CARD, "application/json", r#"["abc"]"#),
            400,
            Some("invalid_body"),
        ),
        case(
            "invalidate: nested JSON as body",
            Request::post(INVALIDATE, "application/json", "[".repeat(10_000)).bearer(ADMIN_KEY),
            400,
            Some("invalid_body"),
        ),
        // Query strings.
        case(
            "invalid UTF-8 (percent-encoded) in the query",
            Request::get(sign_query("https%3A%2F%2Fa.example.com%2F%FF%FE")),
            400,
            Some("invalid_query"),
        ),
        // Refused by the HTTP layer (actix-http, the `http` crate) before any route runs:
        // a bare 400 or 431 without a body, and the connection closed. No handler of
        // ours can answer these; the rows hold the status and the process's health.
        case(
            "invalid UTF-8 (raw bytes) in the request target",
            Request::get(b"/wxJssdk/getJssdk?url=https://a.example.com/\xff\xfe".to_vec()),
            400,
            None,
        ),
        case(
            "a 70 KB request target",
            Request::get(format!("{SIGN}?{}", "p=1&".repeat(17_500))),
            400,
            None,
        ),
        case(
            "a 256 KiB header",
            Request::get(TOKEN).bearer("k".repeat(256 * 1024)),
            431,
            None,
        ),
        case(
            "a negative content-length",
            Request::new("POST", SIGN).header("content-length", "-1"),
            400,
            None,
        ),
        case(
            "invalid UTF-8 (percent-encoded) in the verification query",
            Request::get(format!("{VERIFY}?signature=%FF&timestamp=1&nonce=2&echostr=3")),
            400,
            Some("invalid_query"),
        ),
        case(
            "NUL byte in url",
            Request::get(sign_query("https%3A%2F%2Fa.example.com%2F%00x")),
            400,
            Some("invalid_url"),
        ),
        case(
            "NUL byte in url, in a JSON body",
            Request::post(SIGN, "application/json", r#"{"url": "https://a.example.com/\u0000"}"#),
            400,
            Some("invalid_url"),
        ),
        case(
            "10 000 query parameters",
            Request::get(format!("{SIGN}?{many_params}")),
            400,
            Some("missing_url"),
        ),
        case(
            "10 000 url parameters",
            Request::get(format!("{SIGN}?{many_urls}")),
            400,
            Some("invalid_query"),
        ),
        case(
            "CRLF and Set-Cookie in url",
            Request::get(sign_query(
                "https://a.example.com/%0d%0aSet-Cookie:%20session=stolen",
            )),
            400,
            Some("invalid_url"),
        ),
        case(
            "CRLF and Set-Cookie in url, in a JSON body",
            Request::post(
                SIGN,
                "application/json",
                r#"{"url": "https://a.example.com/\r\nSet-Cookie: session=stolen"}"#,
            ),
            400,
            Some("invalid_url"),
        ),
        case(
            "CRLF and Set-Cookie in echostr",
            Request::get(format!(
                "{VERIFY}?signature=x&timestamp=1&nonce=2&echostr=a%0d%0aSet-Cookie:%20s=1"
            )),
            401,
            Some("invalid_signature"),
        ),
        case(
            "a very long path",
            Request::get(format!("/{}", "a".repeat(16 * 1024))),
            404,
            Some("not_found"),
        ),
        case(
            "a very long app name",
            Request::get(format!("/v1/apps/{}/jssdk/config?url=https://a.example.com/", "n".repeat(16 * 1024))),
            404,
            Some("unknown_app"),
        ),
        // Unknown methods.
        case("FOO on /healthz", Request::new("FOO", "/healthz"), 405, Some("method_not_allowed")),
        case("PROPFIND on signing", Request::new("PROPFIND", SIGN), 405, Some("method_not_allowed")),
        case("DELETE on verification", Request::new("DELETE", VERIFY), 405, Some("method_not_allowed")),
        case("TRACE on the public files", Request::new("TRACE", "/wxJssdk/public/wx-jssdk.js"), 405, Some("method_not_allowed")),
        case("PUT on the admin token", Request::new("PUT", TOKEN), 405, Some("method_not_allowed")),
        case("GET on invalidate", Request::get(INVALIDATE).bearer(ADMIN_KEY), 405, Some("method_not_allowed")),
        case("FOO on an unknown path", Request::new("FOO", "/nowhere"), 404, Some("not_found")),
        // Admin keys.
        case("admin: no key", Request::get(TOKEN), 401, Some("unauthorized")),
        case("admin: wrong key", Request::get(TOKEN).bearer("not-the-key-0123456789"), 401, Some("unauthorized")),
        case("admin: Bearer and an empty key", Request::get(TOKEN).header("authorization", "Bearer "), 401, Some("unauthorized")),
        case("admin: Bearer and spaces", Request::get(TOKEN).header("authorization", "Bearer      "), 401, Some("unauthorized")),
        case("admin: the key in another case", Request::get(TOKEN).bearer(ADMIN_KEY.to_uppercase()), 401, Some("unauthorized")),
        case("admin: the key and a NUL", Request::get(TOKEN).bearer(format!("{ADMIN_KEY}%00")), 401, Some("unauthorized")),
        case("admin: the key as Basic", Request::get(TOKEN).header("authorization", format!("Basic {ADMIN_KEY}")), 401, Some("unauthorized")),
        case("admin: the key without a scheme", Request::get(TOKEN).header("authorization", ADMIN_KEY), 401, Some("unauthorized")),
        case("admin: non-ASCII bytes in the key", Request::get(TOKEN).bearer(b"\xff\xfe-key-0123456789".to_vec()), 401, Some("unauthorized")),
        case("admin: a 16 KiB key", Request::get(TOKEN).bearer("k".repeat(16 * 1024)), 401, Some("unauthorized")),
        case("admin: the key twice", Request::get(TOKEN).bearer(format!("{ADMIN_KEY} {ADMIN_KEY}")), 401, Some("unauthorized")),
        case("admin: invalidate without a key", Request::post(INVALIDATE, "application/json", r#"{"access_token":"x"}"#), 401, Some("unauthorized")),
        case("admin: an unknown app without a key", Request::get("/v1/apps/nope/access_token"), 401, Some("unauthorized")),
        case("card: add_card without a key (any code, any wallet)", Request::get(format!("{CARD}?card_id=c&code=FREE&openid=o")), 401, Some("unauthorized")),
        case("card: add_card in a JSON body without a key", Request::post(CARD, "application/json", r#"{"card_id":"c","code":"FREE"}"#), 401, Some("unauthorized")),
        case("card: add_card with a wrong key", Request::get(format!("{CARD}?card_id=c")).bearer("not-the-key-0123456789"), 401, Some("unauthorized")),
        case("card: add_card with a forged X-Forwarded-For", Request::get(format!("{CARD}?card_id=c")).header("x-forwarded-for", "127.0.0.1"), 401, Some("unauthorized")),
        // Verification.
        case("verify: no parameters", Request::get(VERIFY), 400, Some("missing_parameter")),
        case("verify: push without parameters", Request::post(VERIFY_V1, "text/xml", "<xml/>"), 400, Some("missing_parameter")),
        case(
            "verify: garbage parameters",
            Request::get(format!("{VERIFY}?signature=%%%&timestamp=&nonce=&echostr=")),
            401,
            Some("invalid_signature"),
        ),
        case(
            "verify: a 10 KB signature",
            Request::get(format!("{VERIFY}?signature={}&timestamp=1&nonce=2&echostr=3", "a".repeat(10_000))),
            401,
            Some("invalid_signature"),
        ),
        case(
            "verify: a parameter twice",
            Request::get(format!("{VERIFY}?signature=a&timestamp=1&timestamp=2&nonce=2&echostr=3")),
            400,
            Some("invalid_query"),
        ),
        case(
            "verify: a 10 KB signature on a push",
            Request::post(
                format!("{VERIFY_V1}?signature={}&timestamp=1&nonce=2", "f".repeat(10_000)),
                "text/xml",
                "<xml/>",
            ),
            401,
            Some("invalid_signature"),
        ),
        // HEAD and OPTIONS on every route family.
        case("HEAD /healthz", Request::new("HEAD", "/healthz"), 200, None),
        case("HEAD /readyz", Request::new("HEAD", "/readyz"), 200, None),
        case("HEAD on signing", Request::new("HEAD", SIGN), 405, None),
        case("OPTIONS on signing", Request::new("OPTIONS", SIGN), 204, None),
        case("OPTIONS on card signing", Request::new("OPTIONS", CARD), 204, None),
        case("HEAD on verification", Request::new("HEAD", VERIFY), 405, None),
        case("OPTIONS on verification", Request::new("OPTIONS", VERIFY_V1), 405, Some("method_not_allowed")),
        case("HEAD on a public file", Request::new("HEAD", "/wxJssdk/public/wx-jssdk.js"), 200, None),
        case("OPTIONS on a public file", Request::new("OPTIONS", "/wxJssdk/public/"), 405, Some("method_not_allowed")),
        case("HEAD on the admin token", Request::new("HEAD", TOKEN), 405, None),
        case("OPTIONS on the admin token", Request::new("OPTIONS", TOKEN), 405, Some("method_not_allowed")),
        case("OPTIONS on healthz", Request::new("OPTIONS", "/healthz"), 405, Some("method_not_allowed")),
    ];
    // URLs that are not web pages.
    for (name, url) in [
        (
            "javascript: url",
            "javascript:alert(document.cookie)//https://a.example.com/",
        ),
        (
            "data: url",
            "data:text/html,%3Cscript%3Ealert(1)%3C/script%3E",
        ),
        ("file: url", "file:///etc/passwd"),
        ("ftp: url", "ftp://a.example.com/x"),
        ("scheme-relative url", "//a.example.com/x"),
        ("http url without a host", "http:///x"),
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
        cases.push(case(
            name,
            Request::get(sign_query(&encoded)),
            400,
            Some("invalid_url"),
        ));
    }
    // Path traversal out of the public files.
    for (name, path) in [
        ("traversal: ../", "/wxJssdk/public/../../Cargo.toml"),
        (
            "traversal: %2e%2e%2f",
            "/wxJssdk/public/%2e%2e%2f%2e%2e%2fCargo.toml",
        ),
        ("traversal: ..%2f", "/wxJssdk/public/..%2f..%2fCargo.toml"),
        ("traversal: ..%5c", "/wxJssdk/public/..%5c..%5cCargo.toml"),
        (
            "traversal: %2e%2e%5c",
            "/wxJssdk/public/%2e%2e%5csrc%5cmain.rs",
        ),
        (
            "traversal: double-encoded",
            "/wxJssdk/public/%252e%252e%252fCargo.toml",
        ),
        ("traversal: absolute", "/wxJssdk/public//etc/passwd"),
        (
            "traversal: encoded absolute",
            "/wxJssdk/public/%2fetc%2fpasswd",
        ),
        (
            "traversal: overlong UTF-8 dot",
            "/wxJssdk/public/%c0%ae%c0%ae%2fCargo.toml",
        ),
        (
            "traversal: a source file",
            "/wxJssdk/public/..%2f..%2fsrc%2fmain.rs",
        ),
        ("traversal: NUL", "/wxJssdk/public/wx-jssdk.js%00.html"),
        (
            "traversal: the index with dots",
            "/wxJssdk/public/./index.html/..",
        ),
    ] {
        cases.push(case(name, Request::get(path), 404, Some("not_found")));
    }
    cases
}

/// What no answer may contain, whatever was asked.
fn leaks(answer: &Answer) -> Vec<String> {
    let body = String::from_utf8_lossy(&answer.body);
    let mut found = Vec::new();
    for (what, needle) in [
        ("the app secret", SECRET),
        ("the server token", SERVER_TOKEN),
        ("the admin key", ADMIN_KEY),
        ("a sandbox token or ticket", "sbx-"),
        ("Cargo.toml", "[package]"),
        ("a Rust source file", "fn main"),
        ("/etc/passwd", "root:"),
    ] {
        if body.contains(needle) {
            found.push(what.to_string());
        }
    }
    for (name, value) in &answer.headers {
        if name == "set-cookie" || value.contains(SECRET) || value.contains(ADMIN_KEY) {
            found.push(format!("header {name}: {value}"));
        }
    }
    found
}

/// What is wrong with `answer` for `case`, if anything.
fn check(case: &Case, answer: &Answer) -> Vec<String> {
    let mut problems = leaks(answer);
    if answer.status != case.status {
        problems.push(format!(
            "status {} instead of {}: {}",
            answer.status,
            case.status,
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    let Some(code) = case.code else {
        return problems;
    };
    if !answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"))
    {
        problems.push(format!(
            "content-type {:?} instead of JSON",
            answer.header("content-type")
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(body) => {
            if body["error"]["code"] != code {
                problems.push(format!("code {} instead of {code}", body["error"]["code"]));
            }
            if body["error"]["message"].as_str().is_none_or(str::is_empty) {
                problems.push("no message".into());
            }
            if body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 512)
            {
                problems.push("a message longer than 512 bytes: it echoes the request".into());
            }
        }
        Err(e) => problems.push(format!("not a JSON error ({e})")),
    }
    if code == "unauthorized"
        && !answer
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer"))
    {
        problems.push("401 without WWW-Authenticate: Bearer".into());
    }
    problems
}

async fn healthy(app: &TestApp) -> Result<(), String> {
    let answer = send(&address(app), &Request::get("/healthz")).await?;
    match answer.status {
        200 => Ok(()),
        other => Err(format!("/healthz answered {other}")),
    }
}

fn address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

#[actix_web::test]
async fn hostile_requests_get_json_errors_and_change_nothing() {
    // Rows with a (wrong) key come from clients of their own, through a trusted proxy:
    // from one client they would soon be guesses answered 429 (see trust.rs).
    let app = spawn_app_with(Options {
        admin_keys: vec![ADMIN_KEY],
        trusted_proxies: vec!["127.0.0.1"],
        ..Options::default()
    })
    .await;
    let address = address(&app);
    let mut failures = Vec::new();
    for (i, mut case) in cases().into_iter().enumerate() {
        if case
            .request
            .headers
            .iter()
            .any(|(name, _)| *name == "authorization")
        {
            let client = format!("198.51.100.{}", i % 250);
            case.request
                .headers
                .push(("x-forwarded-for", client.into_bytes()));
        }
        app.sandbox.reset_calls();
        let answer = tokio::time::timeout(ROW_TIMEOUT, send(&address, &case.request)).await;
        let mut problems = match answer {
            Err(_) => vec![format!("no answer within {ROW_TIMEOUT:?}")],
            Ok(Err(e)) => vec![e],
            Ok(Ok(answer)) => check(&case, &answer),
        };
        if case.status >= 400 && app.sandbox.calls() != CallCounts::default() {
            problems.push(format!("WeChat was called: {:?}", app.sandbox.calls()));
        }
        if let Err(e) = tokio::time::timeout(ROW_TIMEOUT, healthy(&app))
            .await
            .unwrap_or_else(|_| Err("/healthz did not answer".into()))
        {
            problems.push(format!("afterwards: {e}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
