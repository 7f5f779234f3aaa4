//! The page side in a real browser, as part of `cargo test`: runs the Node.js tests of
//! `tests/browser/` (headless Chromium driven by playwright-core, the official JS-SDK,
//! a stand-in WeixinJSBridge) against this build's `wx-jssdk --dev`.
//!
//! Needs Node.js 20+, npm and Debian's Chromium. When one is missing the test fails and
//! says how to install it: it never skips, so a green run means the pages were tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::printed;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const INSTALL: &str = "apt-get install -y chromium nodejs npm";
/// playwright-core's own minimum.
const NODE_MAJOR: u32 = 20;
/// Bounds on the two steps, far above what they take (npm ci: seconds; the tests: ~10 s),
/// so that a hang fails the run instead of stalling CI.
const NPM_CI_LIMIT: Duration = Duration::from_secs(300);
const TESTS_LIMIT: Duration = Duration::from_secs(300);

#[test]
fn pages_work_in_a_real_browser() {
    let chromium = chromium();
    check_node();
    common::npm_ci(Path::new(DIR), NPM_CI_LIMIT);

    let mut command = Command::new("node");
    command
        .current_dir(DIR)
        // One test may wait 15 s for a page; none may hang the run.
        .args(["--test", "--test-timeout=60000"])
        .env("WXJSSDK_BIN", env!("CARGO_BIN_EXE_wx-jssdk"))
        .env("CHROMIUM_PATH", &chromium);
    let output = common::run_bounded(&mut command, TESTS_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "the browser tests failed ({}):\n{}",
        output.status,
        printed(&output)
    );
}

/// `CHROMIUM_PATH`, or Debian's chromium.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is not installed at {}: the browser tests drive a real headless Chromium. \
         Install it with `{INSTALL}` (or point CHROMIUM_PATH at a Chromium binary). \
         Playwright's own browser download does not work on this network.",
        path.display()
    );
    path
}

fn check_node() {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): the browser tests run on Node.js {NODE_MAJOR}+ \
                 with npm. Install them with `{INSTALL}`"
            )
        });
    let text = String::from_utf8_lossy(&version.stdout);
    let major = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        major >= NODE_MAJOR,
        "Node.js {} is too old: playwright-core needs {NODE_MAJOR} or later",
        text.trim()
    );
    if let Err(e) = Command::new("npm").arg("--version").output() {
        panic!("cannot run `npm` ({e}): install it with `{INSTALL}`");
    }
}
