//! The soak in its CI form: `soak/run.sh` with `DURATION=60` on free ports, against the
//! binary under test. The script exits non-zero when a limit is broken (a non-2xx answer
//! outside the Redis and instance restart windows, a signature that does not verify,
//! more WeChat calls than one per renewal period, RSS growth); this test fails with its
//! output. Takes about 75 s (a minute of load plus the stack's start and stop).
//!
//! Needs `nginx`, `redis-server` and `python3` installed (the script says which is missing).

mod common;

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/soak/run.sh");

#[test]
fn a_minute_of_load_with_redis_and_instance_restarts_stays_within_limits() {
    let dir = tempfile::Builder::new()
        .prefix("wx-jssdk-soak-test-")
        .tempdir()
        .expect("a state dir for the stack");
    let ports = common::distinct_free_ports(6);
    let output = Command::new("bash")
        .arg(SCRIPT)
        .env("DURATION", "60")
        .env("STACK_DIR", dir.path())
        .env("WXJSSDK_BIN", env!("CARGO_BIN_EXE_wx-jssdk"))
        .env("STACK_PORT", ports[0].to_string())
        .env("REDIS_PORT", ports[1].to_string())
        .env("SANDBOX_PORT", ports[2].to_string())
        .env(
            "INSTANCE_PORTS",
            format!("{} {} {}", ports[3], ports[4], ports[5]),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {SCRIPT}: {e}"));
    if output.status.success() {
        return;
    }
    // Kept for reading: the stack's logs are the first thing to look at.
    let kept = dir.keep();
    panic!(
        "soak/run.sh failed ({}); the stack's logs are in {}/logs\n--- stdout:\n{}--- stderr:\n{}",
        output.status,
        kept.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
