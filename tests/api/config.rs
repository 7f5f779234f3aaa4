//! Start-up configuration, through the real binary.

use std::io::Write;
use std::process::{Command, Output};
use std::time::Duration;

/// Starts the service on `toml` with `env`; every case that uses it must fail before
/// serving.
pub fn run_with_config(toml: &str, env: &[(&str, &str)]) -> Output {
    let mut env = env.to_vec();
    env.push(("WXJSSDK__SERVER__BIND", "127.0.0.1:0"));
    run_binary(&[], toml, &env)
}

/// Runs `wx-jssdk check-config` on `toml` with `env`.
pub fn check_config(toml: &str, env: &[(&str, &str)]) -> Output {
    run_binary(&["check-config"], toml, env)
}

/// Runs the binary with `args`, `--config` a file holding `toml`, and `env`; the
/// timeout guards against a hang.
fn run_binary(args: &[&str], toml: &str, env: &[(&str, &str)]) -> Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wx-jssdk"));
    command
        .args(args)
        .arg("--config")
        .arg(file.path())
        .env_remove("WXJSSDK_CONFIG")
        .envs(env.iter().copied());
    crate::common::run_bounded(&mut command, std::time::Duration::from_secs(20))
        .expect("run wx-jssdk")
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
        (redis.pool_size, redis.timeout),
        (16, Duration::from_millis(1000)),
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
            server.shutdown_timeout,
            server.client_request_timeout,
            server.client_disconnect_timeout,
            server.max_connections
        ),
        (
            Duration::from_secs(30),
            Duration::from_millis(5000),
            Duration::from_millis(1000),
            25_000
        )
    );

    // 0 would switch actix's slow-client protection off.
    let toml = format!("{COMPLETE_APP}\n[server]\nclient_request_timeout_ms = 0\n");
    let output = run_with_config(&toml, &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("server.client_request_timeout_ms"), "{err}");
}

#[test]
fn a_mistyped_key_stops_startup_named_with_its_table_and_the_closest_key() {
    let toml = format!("{COMPLETE_APP}\n[cache]\nlock_wait_msec = 5\n");
    let output = run_with_config(&toml, &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("`cache.lock_wait_msec`"), "{err}");
    assert!(err.contains("did you mean `cache.lock_wait_ms`"), "{err}");

    let output = run_with_config(COMPLETE_APP, &[("WXJSSDK__CACHE__LOCK_WAIT_MSEC", "5")]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("WXJSSDK__CACHE__LOCK_WAIT_MSEC"), "{err}");
    assert!(
        err.contains("did you mean WXJSSDK__CACHE__LOCK_WAIT_MS "),
        "{err}"
    );

    // A key far from any is named with where the valid ones are.
    let output = run_with_config(&format!("{COMPLETE_APP}\n[cahce]\nx = 1\n"), &[]);
    assert!(stderr(&output).contains("`cahce.x`"), "{}", stderr(&output));
}

#[test]
fn configuration_errors_name_the_key_and_what_is_allowed() {
    for (extra, env, expected) in [
        (
            "",
            ("WXJSSDK__SERVER__BIND", "notanaddr"),
            "`server.bind` = \"notanaddr\" is not an address",
        ),
        (
            "",
            ("WXJSSDK__WECHAT__TOKEN_MODE", "fast"),
            "`wechat.token_mode` is \"fast\"; expected one of `stable`, `classic`",
        ),
        (
            "",
            ("WXJSSDK__LOG__FORMAT", "xml"),
            "`log.format` is \"xml\"; expected one of `human`, `json`",
        ),
        (
            "",
            ("WXJSSDK__CACHE__LOCK_WAIT_MS", "soon"),
            "`cache.lock_wait_ms`",
        ),
        (
            "",
            ("WXJSSDK__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,nginx"),
            "`server.trusted_proxies[1]`",
        ),
        (
            "[server]\nops_bind = \"nowhere\"\n",
            ("X", "x"),
            "`server.ops_bind`",
        ),
    ] {
        let output = check_config(&format!("{COMPLETE_APP}\n{extra}"), &[env]);
        assert_eq!(output.status.code(), Some(1), "{extra} {env:?}");
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
}

#[test]
fn an_app_name_the_environment_could_not_reach_is_refused() {
    let toml = "[apps.Shop]\nappid = \"wx1\"\nsecret = \"s\"\ntoken = \"t\"\n";
    let output = run_with_config(toml, &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("`Shop`") && err.contains("`shop`"), "{err}");
}

#[test]
fn one_spelling_per_setting_of_an_app() {
    let toml =
        "[apps.oa]\nkind = \"work\"\ncorpid = \"ww1\"\nagentid = \"1\"\ncorpsecret = \"s\"\n";
    let output = run_with_config(toml, &[("WXJSSDK__APPS__OA__SECRET", "env-secret-value")]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("`apps.oa.secret` and `apps.oa.corpsecret`")
            && err.contains("WXJSSDK__APPS__OA__CORPSECRET"),
        "{err}"
    );
    assert!(!err.contains("env-secret-value"), "{err}");
    // The same spelling in both layers is an override, as for any setting.
    let output = check_config(
        toml,
        &[("WXJSSDK__APPS__OA__CORPSECRET", "env-secret-value")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_config_prints_what_would_run_with_secrets_masked() {
    let toml = format!(
        "{COMPLETE_APP}\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:6390/0\"\n[admin]\nkeys = [\"admin-key-0123456789abcdef\"]\n"
    );
    let output = check_config(&toml, &[("WXJSSDK__CACHE__LOCK_WAIT_MS", "750")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    for expected in [
        "configuration OK",
        "apps: default (official)",
        "store: redis",
        "cache.lock_wait_ms = 750  # environment",
        "cache.lock_ttl_ms = 5000  # default",
        "apps.default.secret = ***",
        "redis.url = redis://:***@127.0.0.1:6390/0",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    for secret in [
        "top-secret-value",
        "server-token",
        "hunter2",
        "admin-key-0123456789abcdef",
    ] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    let refused = check_config(&format!("{COMPLETE_APP}\n[cache]\nlock_ttl_ms = 1\n"), &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("cache.lock_ttl_ms"));
}

#[test]
fn domain_verification_files_are_checked_and_come_from_the_environment_too() {
    for (files, expected) in [
        (
            "{ \"../etc/passwd\" = \"x\" }",
            "is not a verification file name",
        ),
        ("{ \"MP_verify_a.txt\" = \"two words\" }", "printable ASCII"),
        (
            "\"MP_verify_a.txt\"",
            "expected a table of file name = content",
        ),
    ] {
        let toml = format!("{COMPLETE_APP}domain_verify_files = {files}\n");
        let output = check_config(&toml, &[]);
        assert_eq!(output.status.code(), Some(1), "{files}");
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
    let two_apps = format!(
        "{COMPLETE_APP}domain_verify_files = {{ \"MP_verify_a.txt\" = \"a\" }}\n\
         [apps.shop]\nappid = \"wx2\"\nsecret = \"s\"\ntoken = \"t\"\n\
         domain_verify_files = {{ \"MP_verify_a.txt\" = \"b\" }}\n"
    );
    assert!(stderr(&check_config(&two_apps, &[])).contains("one file name has one content"));
    let output = check_config(
        COMPLETE_APP,
        &[(
            "WXJSSDK__APPS__DEFAULT__DOMAIN_VERIFY_FILES",
            "MP_verify_a.txt=a, WW_verify_b.txt=b",
        )],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn sentinel_settings_come_from_the_file_or_the_environment() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "{COMPLETE_APP}\n[redis]\nsentinel_urls = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\n\
         sentinel_master = \"mymaster\"\n"
    )
    .unwrap();
    let from_file =
        wx_jssdk::configuration::Settings::load_with_environment(Some(file.path()), &[], Some(&[]))
            .expect("the settings load");
    let env = [
        ("WXJSSDK__APPS__DEFAULT__APPID", "wx1"),
        ("WXJSSDK__APPS__DEFAULT__SECRET", "s"),
        ("WXJSSDK__APPS__DEFAULT__TOKEN", "t"),
        (
            "WXJSSDK__REDIS__SENTINEL_URLS",
            "redis://10.0.0.1:26379, redis://10.0.0.2:26379",
        ),
        ("WXJSSDK__REDIS__SENTINEL_MASTER", "mymaster"),
        ("WXJSSDK__REDIS__SENTINEL_PASSWORD", "sentinel-pw"),
    ];
    let from_env = wx_jssdk::configuration::Settings::load_with_environment(None, &[], Some(&env))
        .expect("the settings load");
    for (settings, password) in [(from_file, None), (from_env, Some("sentinel-pw"))] {
        let redis = settings.redis.expect("a [redis] table");
        match redis.topology() {
            Ok(wx_jssdk::configuration::RedisTopology::Sentinel(sentinel)) => {
                let urls: Vec<&str> = sentinel.urls.iter().map(|u| u.expose()).collect();
                assert_eq!(urls, ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]);
                assert_eq!(sentinel.master, "mymaster");
                assert_eq!(sentinel.password.map(|p| p.expose()), password);
                assert!(sentinel.username.is_none());
            }
            other => panic!("not a sentinel topology: {other:?}"),
        }
    }
}

#[test]
fn sentinel_settings_are_refused_by_key_and_never_printed() {
    let sentinels = "sentinel_urls = [\"redis://:hunter2@127.0.0.1:26379\"]";
    let cases = [
        // No master name.
        (format!("{sentinels}\n"), "redis.sentinel_master"),
        (
            format!("{sentinels}\nsentinel_master = \" \"\n"),
            "redis.sentinel_master",
        ),
        // Two topologies.
        (
            format!("{sentinels}\nsentinel_master = \"m\"\nurl = \"redis://:hunter2@h:6379\"\n"),
            "redis.sentinel_urls",
        ),
        // Sentinel keys without sentinels.
        (
            "url = \"redis://:hunter2@h:6379\"\nsentinel_master = \"m\"\n".to_string(),
            "redis.sentinel_master",
        ),
        (
            "url = \"redis://h:6379\"\nsentinel_password = \"hunter2\"\n".to_string(),
            "redis.sentinel_password",
        ),
        // The data nodes' connection differs between URLs.
        (
            "sentinel_master = \"m\"\nsentinel_urls = [\"redis://:hunter2@h1:26379\", \"redis://:hunter3@h2:26379\"]\n"
                .to_string(),
            "redis.sentinel_urls[1]",
        ),
        (
            "sentinel_master = \"m\"\nsentinel_urls = [\"redis://h1:26379\", \"http://:hunter2@h2:26379\"]\n"
                .to_string(),
            "redis.sentinel_urls[1]",
        ),
        ("sentinel_master = \"m\"\nsentinel_urls = []\n".to_string(), "redis.sentinel_urls"),
    ];
    for (redis, key) in cases {
        let output = run_with_config(&format!("{COMPLETE_APP}\n[redis]\n{redis}"), &[]);
        assert!(!output.status.success(), "{redis}");
        let err = stderr(&output);
        assert!(err.contains(key), "{key} in {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    let toml = format!(
        "{COMPLETE_APP}\n[redis]\n{sentinels}\nsentinel_master = \"mymaster\"\n\
         sentinel_username = \"sentinel-user-x\"\nsentinel_password = \"hunter2\"\n"
    );
    let output = check_config(&toml, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    for expected in [
        "store: redis sentinel",
        "redis.sentinel_master = mymaster",
        "redis.sentinel_password = ***",
        "redis.sentinel_username = ***",
        "redis.sentinel_urls = [redis://:***@127.0.0.1:26379]",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    for secret in ["hunter2", "sentinel-user-x"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
}
