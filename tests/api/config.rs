//! Start-up configuration, through the real binary.

use std::io::Write;
use std::process::{Command, Output};

fn run_with_config(toml: &str, env: &[(&str, &str)]) -> Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wx-jssdk"));
    command.arg("--config").arg(file.path());
    for (key, value) in env {
        command.env(key, value);
    }
    // Every case below must fail before serving; the timeout guards against a hang.
    command.env("WXJSSDK__SERVER__BIND", "127.0.0.1:0");
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child)
}

fn wait_with_timeout(mut child: std::process::Child) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("wx-jssdk kept running with a configuration it should refuse");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

const COMPLETE_APP: &str = r#"
[apps.default]
appid = "wx1234567890"
secret = "top-secret-value"
token = "server-token"
"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn a_missing_key_stops_startup_and_is_named() {
    let output = run_with_config("[apps.default]\nappid = \"wx1\"\ntoken = \"t\"\n", &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("secret") && err.contains("apps.default"),
        "{err}"
    );
}

#[test]
fn a_malformed_key_stops_startup_and_is_named() {
    let toml = format!("{COMPLETE_APP}\n[wechat]\ntoken_mode = \"sometimes\"\n");
    let output = run_with_config(&toml, &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("token_mode"),
        "{}",
        stderr(&output)
    );

    let toml = format!("{COMPLETE_APP}\n[redis]\nurl = \"http://not-redis\"\n");
    let output = run_with_config(&toml, &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("redis.url"), "{}", stderr(&output));
}

#[test]
fn no_app_configured_stops_startup() {
    let output = run_with_config("", &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("apps"), "{}", stderr(&output));
}

#[test]
fn the_environment_overrides_the_file_and_secrets_are_never_printed() {
    // The file lacks the secret; the environment supplies it. The start-up then fails
    // on the next problem (a bad redis url, also from the environment), which proves
    // both variables were read, and the secret must not appear in what is printed.
    let output = run_with_config(
        "[apps.default]\nappid = \"wx1\"\ntoken = \"t\"\n",
        &[
            ("WXJSSDK__APPS__DEFAULT__SECRET", "env-secret-value"),
            ("WXJSSDK__REDIS__URL", "memcached://somewhere"),
        ],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("redis.url"), "{err}");
    assert!(
        !err.contains("env-secret-value") && !err.contains("memcached://"),
        "{err}"
    );
}

#[test]
fn the_example_configuration_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wx-jssdk.example.toml");
    let settings =
        wx_jssdk::configuration::Settings::load(Some(&path), &[]).expect("the example loads");
    assert!(settings.redis.is_some());
    assert_eq!(
        settings.default_app().map(|(name, _)| name),
        Some("default")
    );
}
