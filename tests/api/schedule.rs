//! The credential cache under a randomised schedule of faults, with real processes:
//! three `wx-jssdk` instances from the built binary, one private Redis, the sandbox
//! WeChat API, and a steady load on every instance, over many short validity windows
//! (`expires_in` = 8 s). The faults are drawn from a seeded RNG: WeChat busy, WeChat
//! unreachable (a gateway's 502 page, HTML, a body cut short, a dropped connection),
//! WeChat slow, the token refused (40001), tickets re-issued or not, Redis restarted
//! empty, Redis flushed, an instance killed and restarted.
//!
//! Checked on every answer and every window:
//! - every `200` is signed over the page's URL with a ticket that was valid at that
//!   moment (a ticket WeChat had issued and not yet expired);
//! - a `5xx` only inside a fault's window that explains it (WeChat failing, Redis
//!   restarting, an instance killed while it held a lock), and then only `503` with a
//!   `Retry-After`; no answer only from a killed instance while it is down; no answer
//!   takes longer than a request may wait;
//! - at most 3 WeChat calls per credential in any validity window, plus what the
//!   faults overlapping it explain (about one call a second during a WeChat outage,
//!   retries included; a replaced token; a renewal repeated after a lost lock);
//! - nothing panics.
//!
//! It prints its seed, the schedule and the figures. `cargo test` runs the short form
//! (40 s, a random seed). Replay a seed, or run a long form:
//!
//! ```sh
//! WXJSSDK_SCHEDULE_SEED=1234 cargo test --test api schedule -- --nocapture
//! WXJSSDK_SCHEDULE_SECS=1800 cargo test --test api schedule -- --nocapture
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wx_sandbox::{Endpoint, Fault, Transport};

use crate::deployment::{Deployment, PAGE_URL};
use crate::helpers::{retry_after, signed_with_a_valid_ticket};

/// The sandbox's `expires_in`: usable 6.4 s, renewed from 3.2 s, dead at 8 s.
const LIFE: Duration = Duration::from_secs(8);
/// The service's `cache.lock_wait_ms` and `cache.lock_ttl_ms` (the defaults).
const LOCK_WAIT: Duration = Duration::from_secs(5);
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long after WeChat comes back a 503 is still explained: the longest backoff with
/// nothing usable (5 s), a request's wait, and a check interval.
const RECOVERY: Duration = Duration::from_secs(11);
/// No request may take longer: a wait for a renewal, and WeChat's bound on a call.
const LONGEST_ANSWER: Duration = Duration::from_secs(12);
const INSTANCES: usize = 3;
const ENDPOINTS: [Endpoint; 3] = [Endpoint::Token, Endpoint::StableToken, Endpoint::GetTicket];

#[derive(Debug, Clone, Copy)]
enum Trouble {
    /// WeChat answers errcode -1 to every call.
    WechatBusy,
    /// Every call fails below WeChat's API.
    WechatDown(Transport),
    /// Every answer comes after this many ms.
    WechatSlow(u64),
    /// Every token WeChat issued so far is refused from now on (40001).
    TokenRefused,
    /// `getticket` re-issues its ticket (or stops doing so).
    Reissue(bool),
    /// Redis is killed and started again, empty.
    RedisRestart,
    /// Redis loses everything.
    RedisFlush,
    /// An instance is killed (SIGKILL) and started again.
    InstanceRestart(usize),
}

#[derive(Debug)]
struct Episode {
    trouble: Trouble,
    start: Instant,
    end: Instant,
}

impl Episode {
    /// Whether this trouble explains a 503 to a request in flight from `sent` to
    /// `answered`.
    fn excuses_503(&self, sent: Instant, answered: Instant) -> bool {
        let until = match self.trouble {
            Trouble::WechatBusy | Trouble::WechatDown(_) => self.end + RECOVERY,
            Trouble::RedisRestart => self.end + LOCK_WAIT + Duration::from_secs(2),
            // A killed lock holder: the others wait for its lock to expire.
            Trouble::InstanceRestart(_) => self.end + LOCK_TTL + LOCK_WAIT + Duration::from_secs(2),
            _ => return false,
        };
        self.start <= answered && sent <= until
    }

    /// Whether this trouble explains that `instance` did not answer a request in flight
    /// from `sent` to `answered` at all: it was killed (a request sent just before the
    /// kill included) and not yet back.
    fn excuses_no_answer(&self, instance: usize, sent: Instant, answered: Instant) -> bool {
        matches!(self.trouble, Trouble::InstanceRestart(i) if i == instance)
            && self.start <= answered
            && sent <= self.end + Duration::from_secs(1)
    }

    /// WeChat calls of one endpoint this trouble explains in a window it overlaps.
    fn extra_calls(&self, window: (Instant, Instant)) -> usize {
        // Its effects (a backoff, a replaced value) last up to a window after it.
        let reach = self.end + LIFE;
        if reach < window.0 || window.1 < self.start {
            return 0;
        }
        match self.trouble {
            Trouble::WechatBusy | Trouble::WechatDown(_) => {
                // About an attempt (a call and 2 retries) every 2 s, and the first.
                let from = self.start.max(window.0);
                let to = self.end.min(window.1).max(from);
                3 * (2 + (to - from).as_secs() as usize / 2)
            }
            Trouble::TokenRefused => 2,
            Trouble::WechatSlow(_)
            | Trouble::RedisRestart
            | Trouble::RedisFlush
            | Trouble::InstanceRestart(_) => 1,
            Trouble::Reissue(_) => 0,
        }
    }
}

/// One signing request and how it ended.
#[derive(Debug)]
struct Answer {
    instance: usize,
    sent: Instant,
    took: Duration,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Signed,
    /// A 200 whose signature does not verify with a ticket valid at that moment.
    BadSignature(String),
    Status(u16, Option<String>, String),
    NoAnswer(String),
}

fn setting(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Draws the next trouble.
fn draw(rng: &mut StdRng) -> Trouble {
    match rng.random_range(0..100) {
        0..20 => Trouble::WechatBusy,
        20..30 => Trouble::WechatDown(match rng.random_range(0..4) {
            0 => Transport::BadGateway,
            1 => Transport::HtmlPage,
            2 => Transport::Truncated,
            _ => Transport::Reset,
        }),
        30..42 => Trouble::WechatSlow(rng.random_range(100..900)),
        42..54 => Trouble::TokenRefused,
        54..66 => Trouble::Reissue(rng.random_bool(0.5)),
        66..76 => Trouble::RedisRestart,
        76..86 => Trouble::RedisFlush,
        _ => Trouble::InstanceRestart(rng.random_range(0..INSTANCES)),
    }
}

/// Sends signing requests to `address` every 25 ms until `stop`, recording each.
async fn load(
    instance: usize,
    address: String,
    deployment_sandbox: wx_sandbox::Sandbox,
    answers: Rc<RefCell<Vec<Answer>>>,
    stop: Rc<RefCell<bool>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    while !*stop.borrow() {
        let sent = Instant::now();
        let response = client
            .get(format!("{address}/wxJssdk/getJssdk"))
            .query(&[("url", PAGE_URL)])
            .send()
            .await;
        let outcome = match response {
            Err(e) => Outcome::NoAnswer(format!("{e:?}")),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(&response);
                let body = response.text().await.unwrap_or_default();
                match status {
                    200 => {
                        let config = serde_json::from_str(&body).unwrap_or_default();
                        if signed_with_a_valid_ticket(&deployment_sandbox, &config, PAGE_URL, sent)
                        {
                            Outcome::Signed
                        } else {
                            Outcome::BadSignature(body)
                        }
                    }
                    _ => Outcome::Status(status, retry_after, body),
                }
            }
        };
        answers.borrow_mut().push(Answer {
            instance,
            sent,
            took: sent.elapsed(),
            outcome,
        });
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What went wrong with `answer` (sent that long after `started`), if anything.
fn violation(answer: &Answer, episodes: &[Episode], started: Instant) -> Option<String> {
    let (i, sent, answered) = (answer.instance, answer.sent, answer.sent + answer.took);
    let at = (sent - started).as_secs_f64();
    if answer.took > LONGEST_ANSWER {
        return Some(format!(
            "{at:.1} s: instance {i} took {:?} to answer",
            answer.took
        ));
    }
    match &answer.outcome {
        Outcome::Signed => None,
        Outcome::BadSignature(body) => Some(format!(
            "{at:.1} s: instance {i} signed with no valid ticket: {body}"
        )),
        Outcome::Status(503, Some(_), _) if episodes.iter().any(|e| e.excuses_503(sent, answered)) => None,
        Outcome::Status(status, retry_after, body) => Some(format!(
            "{at:.1} s: instance {i} answered {status} (Retry-After {retry_after:?}) outside a fault that explains it: {body}"
        )),
        Outcome::NoAnswer(_) if episodes.iter().any(|e| e.excuses_no_answer(i, sent, answered)) => None,
        Outcome::NoAnswer(e) => Some(format!("{at:.1} s: instance {i} did not answer: {e}")),
    }
}

/// Every window (starting at a call of `endpoint`) with more calls than 3 and what
/// the overlapping faults explain.
fn over_budget(calls: &[Instant], endpoint: Endpoint, episodes: &[Episode]) -> Vec<String> {
    let mut over = Vec::new();
    for (i, &start) in calls.iter().enumerate() {
        let window = (start, start + LIFE);
        let count = calls[i..].iter().take_while(|&&at| at < window.1).count();
        let budget = 3 + episodes
            .iter()
            .map(|e| e.extra_calls(window))
            .sum::<usize>();
        if count > budget {
            over.push(format!(
                "{count} {endpoint:?} calls in the window from call {i} (budget {budget})"
            ));
        }
    }
    over
}

#[actix_web::test]
async fn a_random_fault_schedule_keeps_every_invariant() {
    let seed = setting("WXJSSDK_SCHEDULE_SEED").unwrap_or_else(rand::random);
    let run = Duration::from_secs(setting("WXJSSDK_SCHEDULE_SECS").unwrap_or(40));
    let mut rng = StdRng::seed_from_u64(seed);
    let classic = rng.random_bool(0.5);
    eprintln!(
        "fault schedule: seed {seed}, {run:?}, {} tokens (replay: WXJSSDK_SCHEDULE_SEED={seed} \
         WXJSSDK_SCHEDULE_SECS={} cargo test --test api schedule -- --nocapture)",
        if classic { "classic" } else { "stable" },
        run.as_secs()
    );
    let mode = if classic { "classic" } else { "stable" };
    let mut deployment =
        Deployment::start(INSTANCES, &format!("[wechat]\ntoken_mode = \"{mode}\"")).await;
    deployment.sandbox.set_expires_in(LIFE.as_secs());
    let sandbox = deployment.sandbox.clone();
    let answers = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(RefCell::new(false));
    let loads: Vec<_> = (0..INSTANCES)
        .map(|i| {
            let address = deployment.instances[i].address.clone();
            let task = load(i, address, sandbox.clone(), answers.clone(), stop.clone());
            actix_web::rt::spawn(task)
        })
        .collect();

    let started = Instant::now();
    let mut episodes = Vec::new();
    while started.elapsed() < run {
        let quiet = Duration::from_millis(rng.random_range(500..LIFE.as_millis() as u64));
        actix_web::rt::time::sleep(quiet).await;
        let trouble = draw(&mut rng);
        let lasting = Duration::from_millis(rng.random_range(1_000..12_000));
        let start = Instant::now();
        eprintln!("{:>6.1} s  {trouble:?}", (start - started).as_secs_f64());
        apply(&mut deployment, trouble, lasting).await;
        episodes.push(Episode {
            trouble,
            start,
            end: Instant::now(),
        });
    }
    // Healthy again: every instance signs within the recovery time.
    deployment.sandbox.clear_faults();
    let settled = Instant::now() + RECOVERY + LIFE;
    actix_web::rt::time::sleep_until(settled.into()).await;
    *stop.borrow_mut() = true;
    for task in loads {
        task.await.expect("a load task");
    }
    for i in 0..INSTANCES {
        deployment.sign_and_check(i).await;
    }

    let answers = answers.borrow();
    let mut problems: Vec<String> = answers
        .iter()
        .filter_map(|a| violation(a, &episodes, started))
        .collect();
    let log = sandbox.call_log();
    let mut most = BTreeMap::new();
    for endpoint in ENDPOINTS {
        let calls: Vec<Instant> = log
            .iter()
            .filter(|c| c.endpoint == endpoint)
            .map(|c| c.at)
            .collect();
        problems.extend(over_budget(&calls, endpoint, &episodes));
        most.insert(format!("{endpoint:?}"), calls.len());
    }
    for i in 0..INSTANCES {
        if deployment.log(i).contains("panicked") {
            problems.push(format!("instance {i} panicked:\n{}", deployment.log(i)));
        }
    }
    let mut by_status = BTreeMap::new();
    for answer in answers.iter() {
        let key = match &answer.outcome {
            Outcome::Signed => "200".to_string(),
            Outcome::BadSignature(_) => "200 unverifiable".to_string(),
            Outcome::Status(status, _, _) => status.to_string(),
            Outcome::NoAnswer(_) => "no answer".to_string(),
        };
        *by_status.entry(key).or_insert(0) += 1;
    }
    let windows = (started.elapsed().as_secs_f64() / LIFE.as_secs_f64()).ceil();
    eprintln!(
        "seed {seed}: {} answers {by_status:?}; WeChat calls {most:?} over {windows} windows; {} problem(s)",
        answers.len(),
        problems.len()
    );
    if !problems.is_empty() {
        for endpoint in ENDPOINTS {
            let at: Vec<String> = log
                .iter()
                .filter(|c| c.endpoint == endpoint)
                .map(|c| format!("{:.1}", (c.at - started).as_secs_f64()))
                .collect();
            eprintln!("{endpoint:?} calls at (s): {}", at.join(" "));
        }
        for i in 0..INSTANCES {
            let log = deployment.log(i);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("wx_jssdk::access"))
                .collect();
            eprintln!(
                "--- instance {i}, without its access log:\n{}",
                lines.join("\n")
            );
        }
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s), the first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Applies `trouble`, for `lasting` when it lasts.
async fn apply(deployment: &mut Deployment, trouble: Trouble, lasting: Duration) {
    let sandbox = &deployment.sandbox;
    // Until cleared, on every endpoint.
    let everywhere = |fault: &dyn Fn(Endpoint) -> Fault| {
        for endpoint in ENDPOINTS {
            sandbox.inject(fault(endpoint).times(0));
        }
    };
    match trouble {
        Trouble::WechatBusy => everywhere(&|e| Fault::errcode(e, -1)),
        Trouble::WechatDown(transport) => everywhere(&|e| Fault::transport(e, transport)),
        Trouble::WechatSlow(ms) => everywhere(&|e| Fault::delay(e, Duration::from_millis(ms))),
        Trouble::TokenRefused => {
            sandbox.revoke_tokens(crate::helpers::APPID);
            return;
        }
        Trouble::Reissue(on) => {
            sandbox.set_reissue(Endpoint::GetTicket, on);
            return;
        }
        Trouble::RedisRestart => {
            deployment.redis.kill();
            actix_web::rt::time::sleep(lasting / 10).await;
            deployment.redis.restart();
            return;
        }
        Trouble::RedisFlush => {
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut deployment.redis.connection().await)
                .await
                .expect("FLUSHALL");
            return;
        }
        Trouble::InstanceRestart(i) => {
            deployment.kill_instance(i);
            actix_web::rt::time::sleep(lasting / 4).await;
            deployment.restart_instance(i).await;
            return;
        }
    }
    actix_web::rt::time::sleep(lasting).await;
    deployment.sandbox.clear_faults();
}
