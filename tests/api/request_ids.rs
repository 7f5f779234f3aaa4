//! Every answer names the request it answers (`X-Request-Id`), and an error body says
//! the same id: the one nginx or the client sent when it is well formed, otherwise a
//! new UUID. A user's report can quote it; the logs carry it (`logs.rs`).

use reqwest::Method;

use crate::helpers::{spawn_app, Service};

/// The `X-Request-Id` of `response`.
fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id header")
        .to_str()
        .expect("a printable id")
        .to_string()
}

#[actix_web::test]
async fn an_answer_carries_the_id_it_was_sent_or_a_new_one_and_an_error_body_too() {
    let app = spawn_app().await;

    // Made here: a UUID, new for each request.
    let signed = app.sign("https://page.example.com/").await;
    assert_eq!(signed.status(), 200);
    let made = request_id(&signed);
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    let again = request_id(&app.sign("https://page.example.com/").await);
    assert_ne!(made, again, "each request has an id of its own");

    // nginx's `$request_id` (32 hex digits) is kept, in the header and the error body.
    let nginx = "5e0f3c2b8a7d4e1f9c6b3a2d1e0f4c5b";
    let refused = app
        .request(Method::GET, "/wxJssdk/getJssdk")
        .header("x-request-id", nginx)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(request_id(&refused), nginx);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_url");
    assert_eq!(body["error"]["request_id"], nginx);

    // A malformed one is replaced, never echoed (it would forge log lines).
    for sent in ["two words", "a\"quote", &"x".repeat(200)] {
        let response = app
            .request(Method::GET, "/no/such/route")
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let id = request_id(&response);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{sent:?} gave {id}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], id.as_str());
    }
}
