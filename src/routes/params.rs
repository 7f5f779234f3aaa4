//! Request parameters the way the JS-SDK routes take them: in the query string, or on
//! POST in a JSON body or a form, whichever the page finds easiest.

use actix_web::{http::header, web, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string as `T`.
pub(crate) fn from_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    parse_query(req.query_string())
}

/// A raw query string as `T`. Kept apart from [`from_query`] so that it can be
/// exercised without a request (see [`super::parse_request_params`]).
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if !decodes_to_utf8(query.as_bytes()) {
        return Err(ApiError::InvalidQuery(NOT_UTF8.into()));
    }
    serde_urlencoded::from_str(query).map_err(|e| ApiError::InvalidQuery(e.to_string()))
}

/// The body as `T`, by its content type; `None` when there is no body.
pub(crate) async fn from_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    let body = crate::limits::read_body(req, payload).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    parse_body(content_type, &body)
}

/// A body already read, as `T`, by its `content_type`; `None` when it is empty. The
/// pure half of [`from_body`], which the fuzzer reaches without a runtime.
pub(crate) fn parse_body<T: DeserializeOwned>(
    content_type: &str,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    if content_type.starts_with("application/json") {
        if !is_json_object(body) {
            return Err(ApiError::InvalidBody(
                "send a JSON object, e.g. {\"url\": \"...\"}".into(),
            ));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not the expected JSON object: {e}")))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        if !decodes_to_utf8(body) {
            return Err(ApiError::InvalidBody(format!(
                "not a valid form: {NOT_UTF8}"
            )));
        }
        serde_urlencoded::from_bytes(body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not a valid form: {e}")))
    } else {
        Err(ApiError::InvalidBody(
            "send JSON (application/json) or a form (application/x-www-form-urlencoded)".into(),
        ))
    }
}

const NOT_UTF8: &str = "a percent-encoded name or value is not UTF-8";

/// Whether every name and value of a query string or form is UTF-8 once
/// percent-decoded. `serde_urlencoded` silently replaces what is not with U+FFFD, and
/// a page URL so altered would be signed as a string the page never had. The
/// separators (`&`, `=`) are ASCII, so checking the whole string at once checks each
/// piece.
///
/// Decoded into a small buffer on the stack and checked a piece at a time, rather
/// than decoded whole into a new allocation (`perf`: about 1 % of a signature): a
/// character cut at a piece's end is carried over to the next one.
fn decodes_to_utf8(raw: &[u8]) -> bool {
    let mut piece = [0u8; 64];
    let mut len = 0;
    for byte in percent_encoding::percent_decode(raw) {
        piece[len] = byte;
        len += 1;
        if len == piece.len() {
            match std::str::from_utf8(&piece) {
                Ok(_) => len = 0,
                // Only a character cut at the end (at most 3 bytes): carry it over.
                Err(e) if e.error_len().is_none() => {
                    piece.copy_within(e.valid_up_to().., 0);
                    len -= e.valid_up_to();
                }
                Err(_) => return false,
            }
        }
    }
    std::str::from_utf8(&piece[..len]).is_ok()
}

/// Whether `body` holds a JSON object (what every route takes), judged by its first
/// significant byte: serde would also read a struct from an array of its fields.
fn is_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::decodes_to_utf8;

    /// The old check, which allocated: what [`decodes_to_utf8`] must agree with.
    fn decoded_whole(raw: &[u8]) -> bool {
        percent_encoding::percent_decode(raw).decode_utf8().is_ok()
    }

    /// Queries made of escapes (of any byte), ASCII and raw UTF-8, long enough to
    /// cross several pieces, so that characters get cut at a piece's end.
    fn query_like() -> impl Strategy<Value = Vec<u8>> {
        let part = prop_oneof![
            any::<u8>().prop_map(|b| format!("%{b:02X}").into_bytes()),
            "[a-z=&%]{1,3}".prop_map(String::into_bytes),
            "[é中😀]".prop_map(String::into_bytes),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(part, 0..120).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn agrees_with_decoding_the_whole_string(raw in query_like()) {
            prop_assert_eq!(decodes_to_utf8(&raw), decoded_whole(&raw));
        }
    }

    #[test]
    fn a_character_cut_at_a_piece_end_is_still_valid() {
        // 63 ASCII bytes, then a 4-byte character percent-encoded across the boundary.
        let valid = format!("{}%F0%9F%98%80", "a".repeat(63));
        assert!(decodes_to_utf8(valid.as_bytes()));
        let truncated = format!("{}%F0%9F%98", "a".repeat(63));
        assert!(!decodes_to_utf8(truncated.as_bytes()));
    }
}
