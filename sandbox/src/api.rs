//! WeChat's other API calls (`/cgi-bin/menu/get`, `/cgi-bin/user/info`,
//! `/cgi-bin/media/upload`, `/datacube/...`, under every root WeChat serves them from):
//! enough of them to test a gateway that forwards them. The sandbox does not model
//! what they do, only what a forwarder must get right:
//!
//! - the token is checked as for tickets (missing 41001, never issued 40014, replaced
//!   or revoked 40001, expired 42001);
//! - the body is read to its end, however large, without being kept (its size and
//!   SHA-1 are), so that a multi-MiB upload can be checked byte for byte;
//! - the answer echoes what arrived: method, path, query (the token left out), content
//!   type, body size and digest, and a short body itself;
//! - `sandbox_download=N` in the query answers N bytes of `application/octet-stream`
//!   instead (a media download), with a `Content-Disposition` as WeChat sends one.
//!
//! Every call answered is kept ([`ApiCall`]) with the token it carried.

use std::collections::HashMap;

use actix_web::body::SizedStream;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use sha1::{Digest, Sha1};

/// The route of these calls: any path under one of WeChat's API roots that is not one
/// of the sandbox's token and ticket endpoints (registered before it).
pub const PATTERN: &str =
    "/{root:cgi-bin|datacube|card|customservice|merchant|wxa|shakearound}/{path:.*}";

/// A body up to this size is echoed back as text (when it is UTF-8).
const ECHOED_BODY_BYTES: usize = 64 * 1024;

/// The largest download answered (`sandbox_download`).
const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// One API call the sandbox answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub access_token: String,
    pub content_type: Option<String>,
    pub body_bytes: u64,
}

/// A request body as it arrived: its size, digest and start.
pub(crate) struct Received {
    bytes: u64,
    sha1: String,
    start: Vec<u8>,
    /// The body broke off (the client's connection failed, or a limit upstream).
    broken: bool,
}

impl Received {
    pub(crate) async fn read(mut body: web::Payload) -> Self {
        let mut digest = Sha1::new();
        let mut bytes = 0u64;
        let mut start = Vec::new();
        let mut broken = false;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                broken = true;
                break;
            };
            digest.update(&chunk);
            bytes += chunk.len() as u64;
            let room = ECHOED_BODY_BYTES.saturating_sub(start.len());
            start.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
        Self {
            bytes,
            sha1: hex::encode(digest.finalize()),
            start,
            broken,
        }
    }

    pub(crate) fn call(&self, req: &HttpRequest, access_token: String) -> ApiCall {
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        ApiCall {
            method: req.method().to_string(),
            path: req.path().to_string(),
            access_token,
            content_type,
            body_bytes: self.bytes,
        }
    }
}

/// The echo of `call`, or the download the query asks for.
pub(crate) fn answer(
    query: &HashMap<String, String>,
    call: &ApiCall,
    received: &Received,
) -> HttpResponse {
    if let Some(size) = query.get("sandbox_download").and_then(|n| n.parse().ok()) {
        return download(size);
    }
    let echoed: HashMap<&String, &String> = query
        .iter()
        .filter(|(key, _)| *key != "access_token")
        .collect();
    let body = (received.bytes as usize <= ECHOED_BODY_BYTES)
        .then(|| String::from_utf8(received.start.clone()).ok())
        .flatten();
    HttpResponse::Ok().json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "method": call.method,
        "path": call.path,
        "query": echoed,
        "content_type": call.content_type,
        "body_bytes": received.bytes,
        "body_sha1": received.sha1,
        "body_broken": received.broken,
        "body": body,
    }))
}

/// `size` bytes of a media file, streamed: byte `i` is `i % 251`, so a test can check
/// every byte without keeping a copy.
fn download(size: u64) -> HttpResponse {
    let size = size.min(MAX_DOWNLOAD_BYTES);
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::iter((0..size.div_ceil(CHUNK)).map(move |i| {
        let from = i * CHUNK;
        let to = (from + CHUNK).min(size);
        let chunk: Vec<u8> = (from..to).map(|at| (at % 251) as u8).collect();
        Ok::<_, std::io::Error>(Bytes::from(chunk))
    }));
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("content-disposition", "attachment; filename=\"media.bin\""))
        .body(SizedStream::new(size, chunks))
}
