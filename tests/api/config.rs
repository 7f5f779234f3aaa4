//! Start-up configuration, through the real binary.

use std::io::Write;
use std::process::{Command, Output};

pub fn run_with_config(toml: &str, env: &[(&str, &str)]) -> Output {
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

pub const COMPLETE_APP: &str = r#"
[apps.default]
appid = "wx1234567890"
secret = "top-secret-value"
token = "server-token"
"#;

pub fn stderr(output: &Output) -> String {
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

#[test]
fn redis_needs_exactly_one_of_url_and_cluster_urls_and_urls_are_never_printed() {
    let both = format!(
        "{COMPLETE_APP}\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:6390/0\"\n\
         cluster_urls = [\"redis://:hunter2@127.0.0.1:7000\"]\n"
    );
    let neither = format!("{COMPLETE_APP}\n[redis]\nkey_prefix = \"wxjssdk\"\n");
    for toml in [both, neither] {
        let output = run_with_config(&toml, &[]);
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(
            err.contains("redis.url") && err.contains("redis.cluster_urls"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn a_bad_cluster_url_is_named_by_its_position_and_not_printed() {
    let urls = "redis://:hunter2@127.0.0.1:7000, http://:hunter2@127.0.0.1:7001";
    let as_list = format!(
        "{COMPLETE_APP}\n[redis]\ncluster_urls = [\"redis://:hunter2@127.0.0.1:7000\", \"http://:hunter2@127.0.0.1:7001\"]\n"
    );
    let as_string = format!("{COMPLETE_APP}\n[redis]\ncluster_urls = \"{urls}\"\n");
    let with_database =
        format!("{COMPLETE_APP}\n[redis]\ncluster_urls = [\"redis://127.0.0.1:7000\", \"redis://:hunter2@127.0.0.1:7001/2\"]\n");
    for output in [
        run_with_config(&as_list, &[]),
        run_with_config(&as_string, &[]),
        run_with_config(&with_database, &[]),
        run_with_config(COMPLETE_APP, &[("WXJSSDK__REDIS__CLUSTER_URLS", urls)]),
    ] {
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(err.contains("redis.cluster_urls[1]"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // A value of the wrong type is not echoed either.
    let output = run_with_config(
        &format!("{COMPLETE_APP}\n[redis]\ncluster_urls = {{ url = \"redis://:hunter2@h:1\" }}\n"),
        &[],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("cluster_urls") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn cluster_urls_come_from_the_environment_as_a_list_and_other_values_stay_strings() {
    let load = |vars: &[(&str, &str)]| {
        let mut env = vec![
            ("WXJSSDK__APPS__DEFAULT__APPID", "0123"),
            ("WXJSSDK__APPS__DEFAULT__SECRET", "1e5"),
            ("WXJSSDK__APPS__DEFAULT__TOKEN", "true"),
        ];
        env.extend_from_slice(vars);
        wx_jssdk::configuration::Settings::load_with_environment(None, &[], Some(&env))
            .expect("the settings load")
    };
    let urls = |settings: &wx_jssdk::configuration::Settings| {
        let redis = settings.redis.as_ref().expect("a [redis] table");
        assert!(redis.url.is_none());
        redis
            .cluster_urls
            .iter()
            .flatten()
            .map(|u| u.expose().to_string())
            .collect::<Vec<_>>()
    };

    let settings = load(&[
        (
            "WXJSSDK__REDIS__CLUSTER_URLS",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        ),
        ("WXJSSDK__REDIS__KEY_PREFIX", "007"),
    ]);
    assert_eq!(
        urls(&settings),
        ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
    );
    // Only the list keys are split or parsed: "0123" does not become 123.
    let app = &settings.apps["default"];
    assert_eq!(app.appid, "0123");
    let token = app.token.as_ref().map(|t| t.expose());
    assert_eq!((app.secret.expose(), token), ("1e5", Some("true")));
    assert_eq!(settings.redis.as_ref().unwrap().key_prefix, "007");

    let settings = load(&[("wxjssdk__redis__cluster_urls", "redis://127.0.0.1:7000")]);
    assert_eq!(urls(&settings), ["redis://127.0.0.1:7000"]);
    let settings = load(&[(
        "WXJSSDK__REDIS__CLUSTER_URLS",
        " redis://127.0.0.1:7000 , redis://127.0.0.1:7001,",
    )]);
    assert_eq!(
        urls(&settings),
        ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"],
        "spaces and an empty last item are ignored"
    );
}

#[test]
fn cluster_urls_load_from_the_file_as_an_array() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "{COMPLETE_APP}\n[redis]\ncluster_urls = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n"
    )
    .unwrap();
    let settings =
        wx_jssdk::configuration::Settings::load_with_environment(Some(file.path()), &[], Some(&[]))
            .expect("the settings load");
    let redis = settings.redis.expect("a [redis] table");
    assert!(matches!(
        redis.topology(),
        Ok(wx_jssdk::configuration::RedisTopology::Cluster(urls)) if urls.len() == 2
    ));
    assert_eq!(
        (redis.pool_size, redis.timeout_ms),
        (16, 1000),
        "defaults apply"
    );
}

#[test]
fn each_kind_of_app_needs_its_own_keys() {
    let work_without_agent = "[apps.work]\nkind = \"work\"\ncorpid = \"ww1\"\ncorpsecret = \"s\"\n";
    let output = run_with_config(work_without_agent, &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("apps.work.agentid"),
        "{}",
        stderr(&output)
    );

    let official_without_token = "[apps.default]\nappid = \"wx1\"\nsecret = \"s\"\n";
    let output = run_with_config(official_without_token, &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("apps.default.token"),
        "{}",
        stderr(&output)
    );

    let toml = format!(
        "{COMPLETE_APP}\n[apps.work]\nkind = \"work\"\ncorpid = \"ww1\"\ncorpsecret = \"s\"\nagentid = \"1000002\"\n"
    );
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), toml).unwrap();
    let settings =
        wx_jssdk::configuration::Settings::load(Some(path.path()), &[]).expect("a valid work app");
    assert_eq!(settings.apps["work"].cache_id(), "ww1/1000002");
    assert_eq!(settings.apps["default"].cache_id(), "wx1234567890");
}

#[test]
fn server_limits_have_defaults_and_a_request_timeout_of_zero_is_refused() {
    let env = [
        ("WXJSSDK__APPS__DEFAULT__APPID", "wx1"),
        ("WXJSSDK__APPS__DEFAULT__SECRET", "s"),
        ("WXJSSDK__APPS__DEFAULT__TOKEN", "t"),
    ];
    let settings = wx_jssdk::configuration::Settings::load_with_environment(None, &[], Some(&env))
        .expect("the settings load");
    let server = &settings.server;
    assert_eq!(
        (
            server.shutdown_timeout_secs,
            server.client_request_timeout_ms,
            server.client_disconnect_timeout_ms,
            server.max_connections
        ),
        (30, 5000, 1000, 25_000)
    );

    // 0 would switch actix's slow-client protection off.
    let toml = format!("{COMPLETE_APP}\n[server]\nclient_request_timeout_ms = 0\n");
    let output = run_with_config(&toml, &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("server.client_request_timeout_ms"), "{err}");
}
