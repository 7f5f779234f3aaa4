//! The benchmark's baseline (`bench/run.sh`): a bare actix-web server that answers every
//! request with a fixed JSON body of a given size, with the same headers as a signature.
//!
//! Measured in the same run and on the same core as the service, it says how fast the
//! framework and the kernel can answer at all on this machine, so that the service's
//! figures read as a share of it: a share is robust to what else the machine runs,
//! requests/s are not. An example rather than a crate of its own: `cargo test` builds
//! it (so it keeps compiling), and it needs nothing the service does not already use.
//!
//! `cargo run --release --example bare -- ADDRESS BODY_BYTES` (one worker).

use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};

/// The body when none is asked for: about the size of a signature's answer.
const DEFAULT_BODY_BYTES: usize = 170;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:18180".into());
    let size = match args.next() {
        Some(n) => n.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("BODY_BYTES {n}: {e}"),
            )
        })?,
        None => DEFAULT_BODY_BYTES,
    };
    let body = web::Bytes::from(padded_json(size));
    HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .body(body)
            }
        }))
    })
    .workers(1)
    .bind(address)?
    .run()
    .await
}

/// A JSON object of exactly `size` bytes (at least the 10 of `{"pad":""}`).
fn padded_json(size: usize) -> String {
    format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)))
}
