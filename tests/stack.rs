//! The load-balanced topology of `deploy/local-stack.sh`: nginx round-robin in front of
//! three instances of the real binary, one private Redis and the sandbox WeChat API, all
//! as separate processes. A burst of concurrent signatures on a cold cache must be
//! answered correctly, spread over every instance, and cost WeChat one token and one
//! ticket in total.
//!
//! Needs `nginx` and `redis-server` installed (the test fails, saying how, when they are not).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use wx_jssdk::wechat::signature::sign_url;
use wx_sandbox::CallCounts;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-stack.sh");
const APPID: &str = "wxstacktest00000001";
const PAGE_URL: &str = "https://page.example.com/x";
const REQUESTS: usize = 600;
const INSTANCES: usize = 3;

/// The running stack; `down` runs when it is dropped, whatever happened before.
struct Stack {
    dir: Option<tempfile::TempDir>,
    env: Vec<(&'static str, String)>,
    entry: String,
    sandbox: String,
}

impl Stack {
    fn up() -> Self {
        for (program, package) in [("nginx", "nginx"), ("redis-server", "redis-server")] {
            assert!(
                installed(program),
                "`{program}` is not installed: the stack test runs the real load-balanced \
                 topology. Install it with `apt-get install -y {package}`"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("wx-jssdk-stack-test-")
            .tempdir()
            .expect("a state dir for the stack");
        let ports = common::distinct_free_ports(6);
        let env = vec![
            ("STACK_DIR", dir.path().to_string_lossy().into_owned()),
            ("WXJSSDK_BIN", env!("CARGO_BIN_EXE_wx-jssdk").to_string()),
            ("STACK_PORT", ports[0].to_string()),
            ("REDIS_PORT", ports[1].to_string()),
            ("SANDBOX_PORT", ports[2].to_string()),
            (
                "INSTANCE_PORTS",
                format!("{} {} {}", ports[3], ports[4], ports[5]),
            ),
            ("STACK_APPID", APPID.to_string()),
            // The request lines the spread is read from are logged at info.
            ("RUST_LOG", "info".to_string()),
            ("WAIT_SECS", "30".to_string()),
        ];
        // The guard exists before `up` runs: a half-started stack is stopped too.
        let stack = Self {
            dir: Some(dir),
            env,
            entry: format!("http://127.0.0.1:{}", ports[0]),
            sandbox: format!("http://127.0.0.1:{}", ports[2]),
        };
        let output = stack.script("up");
        assert!(
            output.status.success(),
            "`deploy/local-stack.sh up` failed ({}):\n{}",
            output.status,
            printed(&output)
        );
        stack
    }

    fn script(&self, command: &str) -> Output {
        Command::new("bash")
            .arg(SCRIPT)
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("WXJSSDK_CONFIG")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT} {command}: {e}"))
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the state dir lives as long as the stack")
            .path()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir().join("logs").join(format!("{name}.log"))
    }

    /// The signing requests each instance answered, from its own log: how many with
    /// `200`, and every line that answered anything else (nginx retries a failed
    /// request on another instance, so the client alone would not see it).
    fn signatures_served(&self) -> (Vec<usize>, Vec<String>) {
        let mut served = Vec::new();
        let mut failed = Vec::new();
        for i in 1..=INSTANCES {
            let log =
                std::fs::read_to_string(self.log(&format!("instance-{i}"))).unwrap_or_default();
            let lines = log
                .lines()
                .filter(|line| line.contains("\"GET /wxJssdk/getJssdk\" "));
            let (ok, other): (Vec<&str>, Vec<&str>) =
                lines.partition(|line| line.contains("\"GET /wxJssdk/getJssdk\" 200 "));
            served.push(ok.len());
            failed.extend(other.iter().map(|line| format!("instance-{i}: {line}")));
        }
        (served, failed)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let output = self.script("down");
        if !output.status.success() {
            eprintln!("`deploy/local-stack.sh down` failed:\n{}", printed(&output));
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("stack state and logs kept in {}", dir.keep().display());
            }
        }
    }
}

fn installed(program: &str) -> bool {
    // nginx lives in /usr/sbin, which is not on every PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .any(|dir| dir.join(program).is_file())
}

fn printed(output: &Output) -> String {
    format!(
        "--- stdout:\n{}--- stderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_through_nginx_is_signed_by_every_instance_with_one_upstream_fetch() {
    let stack = Stack::up();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");

    // All at once, on a cold cache: each instance races for the refresh.
    let answers = join_all((0..REQUESTS).map(|_| async {
        let response = client
            .get(format!("{}/wxJssdk/getJssdk", stack.entry))
            .query(&[("url", PAGE_URL)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str::<serde_json::Value>(&body).map_err(|e| format!("{e}: {body}"))
    }))
    .await;
    let failures: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} signatures failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let ticket: serde_json::Value = client
        .get(format!("{}/sandbox/ticket", stack.sandbox))
        .query(&[("appid", APPID)])
        .send()
        .await
        .expect("ask the sandbox for its ticket")
        .json()
        .await
        .expect("a JSON ticket");
    let ticket = ticket["ticket"]
        .as_str()
        .expect("the sandbox issued a ticket");
    for config in answers.iter().flatten() {
        let signature = config["signature"].as_str().unwrap_or_default();
        assert!(
            signature.len() == 40 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a SHA-1 hex signature: {config}"
        );
        assert_eq!(config["appId"], APPID, "{config}");
        assert_eq!(config["url"], PAGE_URL, "{config}");
        let expected = sign_url(
            ticket,
            config["nonceStr"].as_str().unwrap_or_default(),
            config["timestamp"].as_u64().unwrap_or_default(),
            PAGE_URL,
        );
        assert_eq!(
            signature, expected,
            "the signature does not verify with the sandbox's ticket: {config}"
        );
    }

    // Each instance logs a request line once the answer is sent, so the last lines may
    // trail the answers by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut served, mut failed) = stack.signatures_served();
    while served.iter().sum::<usize>() < REQUESTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (served, failed) = stack.signatures_served();
    }
    assert!(
        failed.is_empty(),
        "instances failed requests that nginx then retried elsewhere: {failed:?}"
    );
    assert_eq!(
        served.iter().sum::<usize>(),
        REQUESTS,
        "the instances' logs should show every signature served once: {served:?}"
    );
    assert!(
        served.iter().all(|&n| n > 0),
        "nginx should spread the requests over all {INSTANCES} instances, served: {served:?}"
    );

    let calls: CallCounts = client
        .get(format!("{}/sandbox/calls", stack.sandbox))
        .send()
        .await
        .expect("ask the sandbox for its call counts")
        .json()
        .await
        .expect("JSON call counts");
    assert_eq!(
        calls,
        CallCounts {
            token: 0,
            stable_token: 1,
            stable_token_force: 0,
            getticket: 1,
            ..CallCounts::default()
        },
        "{REQUESTS} requests over {INSTANCES} instances should fetch one token and one ticket"
    );
}
