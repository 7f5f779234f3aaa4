//! The WeChat protocol: signature rules ([`signature`]) and the API client ([`client`]).
//! Nothing here knows about caching or HTTP routes.

pub mod client;
pub mod signature;

pub use client::{Fetched, TicketKind, WechatClient, WechatError};
