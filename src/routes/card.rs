//! Card signatures (卡券): `cardSign` for `wx.chooseCard`, and the `cardExt` of each card
//! given to `wx.addCard`. Both are the SHA-1 of the *values* of their fields, together
//! with the account's `wx_card` api_ticket, sorted as strings and concatenated.
//!
//! Who may ask differs: `choose_card` only opens the user's card chooser and is public
//! (under the app's CORS rules), but a `cardExt` adds a card to a wallet with the code
//! and for the openid it names, so `add_card` needs an admin key
//! (`Authorization: Bearer KEY`) unless the app sets `card_sign_public`.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::params::{from_body, from_query};
use super::{AppState, SelectedApp};
use crate::configuration::AppKind;
use crate::error::ApiError;
use crate::wechat::signature::{nonce, sign_card};
use crate::wechat::WechatClient;

/// What the page asks to sign; field names as the JS-SDK documents them.
#[derive(Deserialize, Default)]
pub(super) struct CardParams {
    /// `add_card` (default): the `cardExt` of one card for `wx.addCard`;
    /// `choose_card`: the `cardSign` for `wx.chooseCard`.
    purpose: Option<String>,
    card_id: Option<String>,
    code: Option<String>,
    openid: Option<String>,
    balance: Option<String>,
    card_type: Option<String>,
    shop_id: Option<String>,
}

/// One entry of `wx.addCard`'s `cardList`: `cardExt` is the JSON string to pass as is.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddCard {
    card_id: String,
    card_ext: String,
    timestamp: u64,
    nonce_str: String,
    signature: String,
}

/// `cardExt`, with WeChat's own (snake_case) field names.
#[derive(Serialize)]
struct CardExt<'a> {
    code: &'a str,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<&'a str>,
    timestamp: String,
    nonce_str: &'a str,
    signature: &'a str,
}

/// The arguments of `wx.chooseCard`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChooseCard {
    shop_id: String,
    card_type: String,
    card_id: String,
    timestamp: u64,
    nonce_str: String,
    sign_type: &'static str,
    card_sign: String,
}

pub(crate) async fn sign(
    app: SelectedApp,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, ApiError> {
    if app.0.kind != AppKind::Official {
        return Err(ApiError::Unsupported(
            "card tickets exist for official accounts only",
        ));
    }
    let params = params(&req, payload).await?;
    let purpose = params.purpose.as_deref().unwrap_or("add_card");
    if !matches!(purpose, "add_card" | "choose_card") {
        return Err(ApiError::InvalidQuery(
            "`purpose` is `add_card` or `choose_card`".into(),
        ));
    }
    // A `cardExt` puts the card, with the code and for the user it names, in a
    // wallet: the business backend decides that, not the browser.
    if purpose == "add_card" && !app.0.card_sign_public {
        super::admin::authenticate(&req, &state)?;
    }
    if purpose == "add_card" && params.card_id.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::MissingParameter("card_id"));
    }
    let ticket = state.cache.card_ticket(&app.context(wechat)).await?;
    let timestamp = crate::clock::now_secs();
    let nonce_str = nonce();
    let response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .take();
    Ok(match purpose {
        "choose_card" => choose_card(
            response,
            params,
            &app.0.appid,
            &ticket.value,
            timestamp,
            nonce_str,
        ),
        _ => add_card(response, params, &ticket.value, timestamp, nonce_str),
    })
}

async fn params(req: &HttpRequest, payload: web::Payload) -> Result<CardParams, ApiError> {
    if !req.query_string().is_empty() {
        return from_query(req);
    }
    Ok(from_body(req, payload).await?.unwrap_or_default())
}

fn add_card(
    mut response: actix_web::HttpResponseBuilder,
    params: CardParams,
    ticket: &str,
    timestamp: u64,
    nonce_str: String,
) -> HttpResponse {
    let card_id = params.card_id.unwrap_or_default();
    let (code, openid) = (
        params.code.unwrap_or_default(),
        params.openid.unwrap_or_default(),
    );
    let stamp = timestamp.to_string();
    let mut values = vec![ticket, &stamp, &nonce_str, &card_id, &code, &openid];
    values.extend(params.balance.as_deref());
    let signature = sign_card(&values);
    let card_ext = serde_json::json!(CardExt {
        code: &code,
        openid: &openid,
        balance: params.balance.as_deref(),
        timestamp: stamp.clone(),
        nonce_str: &nonce_str,
        signature: &signature,
    })
    .to_string();
    response.json(AddCard {
        card_id,
        card_ext,
        timestamp,
        nonce_str,
        signature,
    })
}

fn choose_card(
    mut response: actix_web::HttpResponseBuilder,
    params: CardParams,
    appid: &str,
    ticket: &str,
    timestamp: u64,
    nonce_str: String,
) -> HttpResponse {
    let shop_id = params.shop_id.unwrap_or_default();
    let card_type = params.card_type.unwrap_or_default();
    let card_id = params.card_id.unwrap_or_default();
    let stamp = timestamp.to_string();
    let card_sign = sign_card(&[
        ticket, appid, &shop_id, &stamp, &nonce_str, &card_id, &card_type,
    ]);
    response.json(ChooseCard {
        shop_id,
        card_type,
        card_id,
        timestamp,
        nonce_str,
        sign_type: "SHA1",
        card_sign,
    })
}
