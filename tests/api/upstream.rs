//! The WeChat client against the sandbox's transport failures: whatever breaks below
//! WeChat's API is a passing failure (retried, then answered 503), never a refusal.

use std::time::Duration;
use wx_jssdk::configuration::{AppSettings, TokenMode, WechatSettings};
use wx_jssdk::secret::Secret;
use wx_jssdk::wechat::{WechatClient, WechatError};
use wx_sandbox::{Endpoint, Fault, Transport};

use crate::helpers::{start_sandbox, APPID, SECRET, SERVER_TOKEN, WECHAT_TIMEOUT_MS};

fn client(api_base: &str, retries: u32) -> WechatClient {
    WechatClient::new(&WechatSettings {
        api_base: api_base.parse().expect("the sandbox's URL"),
        work_api_base: api_base.parse().expect("the sandbox's URL"),
        token_mode: TokenMode::Stable,
        timeout: Duration::from_millis(WECHAT_TIMEOUT_MS),
        retries,
        verify_max_age: None,
    })
}

fn app() -> AppSettings {
    AppSettings::official(APPID, Secret::new(SECRET), Secret::new(SERVER_TOKEN))
}

#[actix_web::test]
async fn every_transport_failure_is_a_passing_failure_and_is_retried() {
    let (sandbox, url) = start_sandbox();
    let once = client(&url, 0);
    for transport in [
        Transport::BadGateway,
        Transport::HtmlPage,
        Transport::Truncated,
        Transport::Reset,
    ] {
        sandbox.inject(Fault::transport(Endpoint::StableToken, transport));
        let error = once
            .access_token(&app(), TokenMode::Stable, false)
            .await
            .expect_err("a failed transport is no token");
        assert!(
            error.is_transient(),
            "{transport:?} gave {error:?}, which would not be retried"
        );
        assert!(
            matches!(error, WechatError::Transport(_) | WechatError::Decode(_)),
            "{transport:?} gave {error:?}"
        );
    }
    assert_eq!(sandbox.calls().stable_token, 4);

    // With retries, a passing failure costs one call more per retry, then succeeds.
    sandbox.inject(Fault::transport(Endpoint::StableToken, Transport::Reset).times(2));
    let token = client(&url, 2)
        .access_token(&app(), TokenMode::Stable, false)
        .await
        .expect("the third attempt gets through");
    assert!(!token.value.is_empty());
    assert_eq!(sandbox.calls().stable_token, 4 + 3);
}

#[actix_web::test]
async fn a_token_the_sandbox_never_issued_is_an_invalid_credential() {
    let (_sandbox, url) = start_sandbox();
    let error = client(&url, 2)
        .ticket(&app(), wx_jssdk::wechat::TicketKind::Jsapi, "made-up-token")
        .await
        .expect_err("no ticket for a token WeChat never issued");
    assert_eq!(error, WechatError::InvalidCredential(40014));
}
