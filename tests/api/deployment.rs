//! A deployment of real `wx-jssdk` processes: a private Redis, the sandbox WeChat API
//! and several instances started from the built binary, each logging to its own file.
//! For the fault tests, which kill and restart its pieces.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tempfile::NamedTempFile;
use wx_sandbox::Sandbox;

use crate::common::free_port;
use crate::helpers::{
    retry_after, signed_with_a_valid_ticket, start_sandbox, RunningBinary, Service, TestRedis,
    APPID, SECRET, SERVER_TOKEN,
};

/// The page every instance is asked to sign.
pub const PAGE_URL: &str = "https://page.example.com/deployed";

pub struct Deployment {
    pub redis: Arc<TestRedis>,
    pub sandbox: Sandbox,
    pub instances: Vec<RunningBinary>,
    logs: Vec<NamedTempFile>,
    _config: NamedTempFile,
    sandbox_url: String,
}

/// The answer to one signing request, as the page would see it (a signature, checked).
pub enum Answer {
    Signed(serde_json::Value),
    Status(u16, Option<String>, serde_json::Value),
}

impl Deployment {
    /// Starts `count` instances; `extra` is appended to their configuration file
    /// (e.g. `[cache]` or `[wechat]` settings).
    pub async fn start(count: usize, extra: &str) -> Self {
        let redis = Arc::new(TestRedis::start());
        let (sandbox, sandbox_url) = start_sandbox();
        let mut config = NamedTempFile::new().expect("a config file");
        // `extra` may open [cache] or [wechat]; the sandbox's address comes from the
        // environment so that it cannot clash with such a table.
        write!(
            config,
            "{extra}\n[redis]\nurl = \"{}\"\n[apps.default]\nappid = \"{APPID}\"\n\
             secret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
            redis.url()
        )
        .expect("write the config");
        let mut deployment = Self {
            redis,
            sandbox,
            instances: Vec::new(),
            logs: Vec::new(),
            _config: config,
            sandbox_url,
        };
        for _ in 0..count {
            deployment.start_instance().await;
        }
        deployment
    }

    async fn start_instance(&mut self) {
        let log = NamedTempFile::new().expect("a log file");
        let instance = self.run_instance(free_port(), &log).await;
        self.instances.push(instance);
        self.logs.push(log);
    }

    /// Runs an instance on `port`, appending what it logs to `log`.
    async fn run_instance(&self, port: u16, log: &NamedTempFile) -> RunningBinary {
        let config = self._config.path().to_string_lossy().to_string();
        let appending = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .expect("open the log");
        let env = [
            ("RUST_LOG", "info"),
            ("WXJSSDK__WECHAT__API_BASE", self.sandbox_url.as_str()),
        ];
        RunningBinary::start_on(port, &["--config", &config], &env, Stdio::from(appending)).await
    }

    /// Kills instance `i` (SIGKILL: no shutdown, its locks are left to expire).
    pub fn kill_instance(&mut self, i: usize) {
        self.instances[i].stop();
    }

    /// Starts instance `i` again, on its port, after [`Deployment::kill_instance`].
    pub async fn restart_instance(&mut self, i: usize) {
        let port = self.instances[i].port();
        self.instances[i] = self.run_instance(port, &self.logs[i]).await;
    }

    /// Asks instance `i` to sign [`PAGE_URL`]. A signature is checked as WeChat would
    /// check it, and the test fails if it does not verify.
    pub async fn sign(&self, i: usize) -> Answer {
        let sent = Instant::now();
        let response = self.instances[i].sign(PAGE_URL).await;
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let body: serde_json::Value = response.json().await.expect("a JSON answer");
        match status {
            200 => {
                assert!(
                    signed_with_a_valid_ticket(&self.sandbox, &body, PAGE_URL, sent),
                    "instance {i} signed with no valid ticket: {body}"
                );
                Answer::Signed(body)
            }
            _ => Answer::Status(status, retry_after, body),
        }
    }

    /// Asks instance `i` to sign [`PAGE_URL`] without waiting for the answer: the
    /// request is in flight while the test stops or kills the instance.
    pub fn sign_in_flight(
        &self,
        i: usize,
    ) -> actix_web::rt::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self.instances[i].request(reqwest::Method::GET, "/wxJssdk/getJssdk");
        actix_web::rt::spawn(request.query(&[("url", PAGE_URL)]).send())
    }

    /// Signs on instance `i`, which must answer with a valid signature.
    pub async fn sign_and_check(&self, i: usize) {
        if let Answer::Status(status, _, body) = self.sign(i).await {
            panic!("instance {i} answered {status}: {body}");
        }
    }

    /// The status of `GET path` on instance `i`; 0 if it does not answer (it is down).
    pub async fn status(&self, i: usize, path: &str) -> u16 {
        let request = self.instances[i].request(reqwest::Method::GET, path);
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Everything instance `i` has logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.logs[i].path()).unwrap_or_default()
    }
}
