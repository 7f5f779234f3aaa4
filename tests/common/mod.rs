//! What several test binaries share: free ports, and running a process to completion
//! within a time limit.
//!
//! It lives in `tests/common/mod.rs`, the layout the Rust book gives for code shared by
//! integration tests: Cargo builds every `tests/*.rs` as a test binary of its own, but
//! not files in subdirectories, so this is no test target itself. `stack.rs`, `soak.rs`
//! and `browser.rs` include it with `mod common;`; the `api` binary, whose root is
//! `tests/api/main.rs`, with `#[path = "../common/mod.rs"] mod common;`.
//!
//! Each binary compiles its own copy and uses only part of it, hence the `dead_code`
//! allowance: what one binary leaves unused another uses.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free port on loopback, for one server a test starts.
pub fn free_port() -> u16 {
    distinct_free_ports(1)[0]
}

/// `count` distinct free ports on loopback. The listeners are held together so the
/// ports differ, and released before returning, just before the caller's processes
/// bind them.
pub fn distinct_free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

/// Runs `command` to completion with its output captured, and fails the test, showing
/// what it printed, if it outlives `limit`: a hang must fail the run, not stall CI.
///
/// The command runs in a process group of its own, and on a timeout the whole group is
/// killed (a script's children, node and Chromium, a service a script started). Its
/// pipes are drained on another thread, so a child that prints a lot cannot block on a
/// full pipe while it is waited for. `Err` only when it cannot be started: the caller
/// says which tool is missing and how to install it.
pub fn run_bounded(command: &mut Command, limit: Duration) -> std::io::Result<Output> {
    use std::os::unix::process::CommandExt;

    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let output = waiter.join().ok().and_then(Result::ok);
            panic!(
                "{command:?} did not finish within {limit:?}:\n{}",
                output.as_ref().map(printed).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match waiter.join() {
        Ok(output) => output,
        Err(_) => panic!("waiting for {command:?}: the thread panicked"),
    }
}

/// What a process printed, stdout then stderr, for a failure message.
pub fn printed(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `npm ci` in `dir` when its `node_modules` is missing or older than its lock file,
/// bounded by `limit`; fails the test with what npm printed.
pub fn npm_ci(dir: &Path, limit: Duration) {
    let modified =
        |path: std::path::PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    let locked = modified(dir.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return;
    }
    let mut command = Command::new("npm");
    command
        .current_dir(dir)
        .args(["ci", "--no-audit", "--no-fund"]);
    let output =
        run_bounded(&mut command, limit).unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "`npm ci` in {} failed ({}); it needs the npm registry:\n{}",
        dir.display(),
        output.status,
        printed(&output)
    );
}
