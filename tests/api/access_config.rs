//! Start-up checks of `allowed_domains`, `cors_origins` and `admin.keys`, through the
//! real binary (and the library's loader for the environment's list form).

use wx_jssdk::configuration::Settings;

use crate::config::{run_with_config, stderr, COMPLETE_APP};

/// Runs the binary with `extra` after a complete app; it must refuse to start and name `key`.
fn refused(extra: &str, env: &[(&str, &str)], key: &str) -> String {
    let output = run_with_config(&format!("{COMPLETE_APP}{extra}"), env);
    let err = stderr(&output);
    assert!(!output.status.success(), "started with {extra}");
    assert!(err.contains(&format!("`{key}`")), "{key} not named: {err}");
    err
}

#[test]
fn a_malformed_domain_pattern_stops_startup_and_is_named_by_position() {
    for bad in [
        "https://example.com",
        "example.com/path",
        "example.com:8080",
        "a.*.example.com",
        "*",
        "exa mple.com",
    ] {
        let extra = format!("allowed_domains = [\"example.com\", \"{bad}\"]\n");
        let err = refused(&extra, &[], "apps.default.allowed_domains[1]");
        assert!(err.contains(bad), "the entry is shown: {err}");
    }
}

#[test]
fn a_malformed_cors_origin_stops_startup_and_is_named_by_position() {
    for bad in [
        "a.example.com",
        "https://a.example.com/path",
        "https://*.example.com",
        "ftp://a.example.com",
    ] {
        let extra = format!("cors_origins = [\"{bad}\"]\n");
        refused(&extra, &[], "apps.default.cors_origins[0]");
    }
    // From the environment, as a comma-separated list.
    refused(
        "",
        &[(
            "WXJSSDK__APPS__DEFAULT__CORS_ORIGINS",
            "https://a.example.com,a.example.com",
        )],
        "apps.default.cors_origins[1]",
    );
}

#[test]
fn a_short_admin_key_stops_startup_and_is_never_printed() {
    let err = refused(
        "\n[admin]\nkeys = [\"a-long-enough-admin-key\", \"short-key-15chr\"]\n",
        &[],
        "admin.keys[1]",
    );
    assert!(err.contains("16"), "{err}");
    assert!(
        !err.contains("short-key-15chr") && !err.contains("a-long-enough-admin-key"),
        "{err}"
    );

    let err = refused(
        "",
        &[(
            "WXJSSDK__ADMIN__KEYS",
            "a-long-enough-admin-key,tiny-secret",
        )],
        "admin.keys[1]",
    );
    assert!(!err.contains("tiny-secret"), "{err}");
    // A value of the wrong type is not echoed either.
    let output = run_with_config(
        &format!("{COMPLETE_APP}\n[admin]\nkeys = {{ key = \"hidden-admin-key-123\" }}\n"),
        &[],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("keys") && !err.contains("hidden-admin-key-123"),
        "{err}"
    );
}

#[test]
fn the_lists_load_from_the_file_and_from_the_environment() {
    let load = |vars: &[(&str, &str)]| {
        let mut env = vec![
            ("WXJSSDK__APPS__DEFAULT__APPID", "wx1"),
            ("WXJSSDK__APPS__DEFAULT__SECRET", "s"),
            ("WXJSSDK__APPS__DEFAULT__TOKEN", "t"),
        ];
        env.extend_from_slice(vars);
        Settings::load_with_environment(None, &[], Some(&env)).expect("the settings load")
    };
    let settings = load(&[
        (
            "WXJSSDK__APPS__DEFAULT__ALLOWED_DOMAINS",
            "example.com, *.example.org",
        ),
        (
            "WXJSSDK__APPS__DEFAULT__CORS_ORIGINS",
            "https://a.example.com",
        ),
        (
            "WXJSSDK__ADMIN__KEYS",
            "first-admin-key-0123456789,second-admin-key-0123456789",
        ),
    ]);
    let app = &settings.apps["default"];
    assert_eq!(app.allowed_domains.refused_host("x.example.org"), None);
    assert!(app.allowed_domains.refused_host("example.org").is_some());
    assert!(app.cors_origins.allows("https://a.example.com"));
    assert_eq!(settings.admin.keys.len(), 2);

    // Absent: any host, no origin, no admin routes.
    let settings = load(&[]);
    let app = &settings.apps["default"];
    assert!(app.allowed_domains.is_empty() && app.cors_origins.is_empty());
    assert!(settings.admin.keys.is_empty());

    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        format!(
            "{COMPLETE_APP}allowed_domains = [\"Example.COM\"]\ncors_origins = [\"*\"]\n\
             [admin]\nkeys = [\"first-admin-key-0123456789\"]\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let settings = Settings::load_with_environment(Some(file.path()), &[], Some(&[]))
        .expect("the settings load");
    let app = &settings.apps["default"];
    assert_eq!(app.allowed_domains.refused_host("example.com"), None);
    assert!(app.cors_origins.allows("https://any.example.net"));
    assert_eq!(settings.admin.keys.len(), 1);
}

#[test]
fn the_commented_examples_in_the_example_configuration_load() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wx-jssdk.example.toml");
    let example = std::fs::read_to_string(path).unwrap();
    let examples = ["allowed_domains =", "cors_origins =", "[admin]", "keys ="];
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if examples.iter().any(|e| rest.starts_with(e)) => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(uncommented, example, "the examples are there");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, uncommented.as_bytes()).unwrap();
    let settings = Settings::load_with_environment(Some(file.path()), &[], Some(&[]))
        .expect("the uncommented examples load");
    let app = &settings.apps["default"];
    assert!(!app.allowed_domains.is_empty() && !app.cors_origins.is_empty());
    assert_eq!(settings.admin.keys.len(), 1);
}
