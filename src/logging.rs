//! The service's log lines, in one of two formats (`log.format`): `human`, env_logger's
//! own look (`[TIME LEVEL target] message`), or `json`, one object per line
//! (`time`, `level`, `target`, `message`) for a log pipeline (Loki, ELK, Alibaba Cloud
//! SLS) to read without regexes. Either way, a line logged while a request is served
//! carries its id ([`crate::request_id`]): `request_id=ID` at the end of a human line,
//! a `request_id` field in JSON. The access log writes its own lines in the same two
//! formats (`crate::access_log`).
//!
//! The logger is installed before the configuration is read (so that loading can log),
//! in the human format; [`use_format`] switches it once the settings are known.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::request_id::{self, RequestId};

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl LogFormat {
    /// The names `log.format` takes, with their formats.
    pub const NAMES: [(&'static str, Self); 2] = [("human", Self::Human), ("json", Self::Json)];
}

/// Whether the log is JSON: set once, read for every line.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger: `RUST_LOG` filters (default `info`), the human format until
/// [`use_format`] says otherwise.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(write_line)
        .init();
}

/// Writes every later line in `format`.
pub fn use_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// The format lines are written in.
pub(crate) fn format() -> LogFormat {
    if JSON.load(Ordering::Relaxed) {
        LogFormat::Json
    } else {
        LogFormat::Human
    }
}

/// One line of the JSON format (also the access log's own notices).
#[derive(Serialize)]
pub(crate) struct JsonLine<'a> {
    pub(crate) time: String,
    pub(crate) level: &'a str,
    pub(crate) target: &'a str,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<RequestId>,
}

fn write_line(
    out: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    let request_id = request_id::current();
    match format() {
        LogFormat::Json => {
            let line = JsonLine {
                time: out.timestamp_millis().to_string(),
                level: record.level().as_str(),
                target: record.target(),
                message: record.args().to_string(),
                request_id,
            };
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)
        }
        LogFormat::Human => {
            let time = out.timestamp();
            write!(
                out,
                "[{time} {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            )?;
            if let Some(id) = request_id {
                write!(out, " request_id={}", id.as_str())?;
            }
            writeln!(out)
        }
    }
}
