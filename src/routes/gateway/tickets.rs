//! WeChat's ticket endpoints, answered from the shared cache: a backend that signs
//! pages with its own SDK gets the deployment's ticket rather than spending the
//! ticket quota ("very limited") on a fetch of its own.
//!
//! Who may have a ticket: whoever holds a token of the app, the current one or the
//! one it replaced while WeChat still accepts it, as with WeChat. Any other token is
//! refused here (40001), with no call upstream.

use actix_web::{web, HttpRequest, HttpResponse};
use wechat_wire::{Answer, TicketKind};

use super::{counted, credential_answer, holder, query_param, GatewayError};
use crate::clock::now_ms;
use crate::configuration::AppKind;
use crate::routes::AppState;
use crate::wechat::WechatClient;

/// `GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card`.
pub(super) async fn official(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    let kind = match query_param(req.query_string(), "type").as_deref() {
        Some("jsapi") => Some(TicketKind::Jsapi),
        Some("wx_card") => Some(TicketKind::Card),
        _ => None,
    };
    ticket(&req, &state, wechat, AppKind::Official, kind).await
}

/// `GET /cgi-bin/get_jsapi_ticket?access_token=T` (WeChat Work): the corp's ticket.
pub(super) async fn work_jsapi(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    ticket(&req, &state, wechat, AppKind::Work, Some(TicketKind::Jsapi)).await
}

/// `GET /cgi-bin/ticket/get?access_token=T&type=agent_config` (WeChat Work).
pub(super) async fn work_agent(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    let kind = (query_param(req.query_string(), "type").as_deref() == Some("agent_config"))
        .then_some(TicketKind::Agent);
    ticket(&req, &state, wechat, AppKind::Work, kind).await
}

/// The ticket `kind` of the app of `app_kind` whose token the request carries. The
/// token is checked first, as WeChat does, then the type (`None`: one the endpoint
/// does not serve).
async fn ticket(
    req: &HttpRequest,
    state: &AppState,
    wechat: web::Data<WechatClient>,
    app_kind: AppKind,
    kind: Option<TicketKind>,
) -> Result<HttpResponse, GatewayError> {
    let answer = async {
        let token =
            query_param(req.query_string(), "access_token").ok_or(GatewayError::TokenMissing)?;
        let (ctx, _) = holder(state, wechat, &token, Some(app_kind)).await?;
        let ticket = match kind.ok_or(GatewayError::TicketType)? {
            TicketKind::Jsapi => state.cache.jsapi_ticket(&ctx).await?,
            TicketKind::Card => state.cache.card_ticket(&ctx).await?,
            TicketKind::Agent => state.cache.agent_ticket(&ctx).await?,
        };
        let answer = Answer::ticket(ticket.value.clone(), ticket.usable_secs(now_ms()));
        Ok(credential_answer(answer))
    };
    counted("ticket", answer.await)
}
