//! The `wx-jssdk` command: the service, its `--dev` mode, and the WeChat sandbox.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wx_jssdk::configuration::Settings;
use wx_jssdk::startup::Application;
use wx_sandbox::{Sandbox, SandboxConfig};

#[derive(Parser)]
#[command(
    version,
    about = "WeChat JS-SDK backend: server-URL verification and wx.config signing"
)]
struct Cli {
    /// TOML configuration file (environment variables WXJSSDK__SECTION__KEY override it).
    #[arg(long, env = "WXJSSDK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Run with nothing configured: in-process store, a demo app and the sandbox WeChat API.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate the configuration exactly as start-up does, print what the
    /// service would run with (secrets masked), and exit 0, or 1 with the problem.
    /// Nothing is bound or connected to: for deploy pipelines, before a rollout.
    CheckConfig,
    /// Run a stand-in for the WeChat API (for tests, demos and the local stack).
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: String,
        /// Lifetime of issued tokens and tickets, in seconds.
        #[arg(long, default_value_t = 7200)]
        expires_in: u64,
        /// Accept only these credentials (APPID:SECRET, repeatable); default: any.
        #[arg(long = "app")]
        apps: Vec<String>,
    },
}

/// Credentials of the demo app that `--dev` configures against the sandbox.
const DEV_APP: [(&str, &str); 3] = [
    ("apps.default.appid", "wxdev00000000000000"),
    ("apps.default.secret", "dev-secret"),
    ("apps.default.token", "dev-token"),
];

#[actix_web::main]
async fn main() -> ExitCode {
    wx_jssdk::logging::init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Sandbox {
            bind,
            expires_in,
            apps,
        }) => run_sandbox(&bind, expires_in, &apps).await,
        Some(Command::CheckConfig) => check_config(cli.config),
        None if cli.dev => run_dev(cli.config).await,
        None => run_service(cli.config, &[], false).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wx-jssdk: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_service(
    config: Option<PathBuf>,
    overrides: &[(&str, &str)],
    dev: bool,
) -> Result<(), String> {
    let settings = Settings::load(config.as_deref(), overrides).map_err(|e| e.to_string())?;
    wx_jssdk::logging::use_format(settings.log.format);
    let bind = settings.server.bind.clone();
    let store = store_name(&settings);
    let app = Application::build(settings).map_err(|e| e.to_string())?;
    match app.ops_port() {
        Some(ops) => log::info!(
            "listening on port {} (operations: port {ops}), store: {store}",
            app.port()
        ),
        None => log::info!("listening on port {}, store: {store}", app.port()),
    }
    if dev {
        print_dev_addresses(&bind, app.port());
    }
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

fn check_config(config: Option<PathBuf>) -> Result<(), String> {
    let (settings, described) =
        Settings::load_described(config.as_deref(), &[], None).map_err(|e| e.to_string())?;
    let apps: Vec<String> = settings
        .apps
        .iter()
        .map(|(name, app)| format!("{name} ({:?})", app.kind).to_lowercase())
        .collect();
    let file = config.map_or("none".into(), |path| path.display().to_string());
    // Written, not println!ed: a reader that stops early (`| head`) is no error.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "configuration OK (file: {file}); apps: {}; store: {}",
        apps.join(", "),
        store_name(&settings)
    );
    for setting in described {
        if writeln!(out, "  {setting}").is_err() {
            break;
        }
    }
    Ok(())
}

fn store_name(settings: &Settings) -> &'static str {
    match &settings.redis {
        Some(redis) if redis.cluster_urls.is_some() => "redis cluster",
        Some(redis) if redis.sentinel_urls.is_some() => "redis sentinel",
        Some(_) => "redis",
        None => "in-process (single instance only)",
    }
}

async fn run_dev(config: Option<PathBuf>) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let sandbox_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let sandbox = Sandbox::new(SandboxConfig::default());
    actix_web::rt::spawn(sandbox.serve(listener).map_err(|e| e.to_string())?);
    let mut overrides = DEV_APP.to_vec();
    // The sandbox answers the WeChat Work endpoints too: a `kind = "work"` app added in
    // the configuration then works in dev mode as well.
    overrides.push(("wechat.api_base", &sandbox_url));
    overrides.push(("wechat.work_api_base", &sandbox_url));
    println!("wx-jssdk --dev: sandbox WeChat API at {sandbox_url}, in-process store");
    println!(
        "  demo app `default`: appid {}, server token {}",
        DEV_APP[0].1, DEV_APP[2].1
    );
    run_service(config, &overrides, true).await
}

/// Printed once the port is known (`server.bind` may ask for any free one).
fn print_dev_addresses(bind: &str, port: u16) {
    let host = match bind.rsplit_once(':').map(|(host, _)| host) {
        Some("0.0.0.0" | "[::]") | None => "127.0.0.1",
        Some(host) => host,
    };
    println!("  demo page: http://{host}:{port}/wxJssdk/public/");
    println!("  try: curl 'http://{host}:{port}/wxJssdk/getJssdk?url=https://example.com/page'");
}

async fn run_sandbox(bind: &str, expires_in: u64, apps: &[String]) -> Result<(), String> {
    let apps = apps
        .iter()
        .map(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
                .ok_or_else(|| format!("--app {pair}: expected APPID:SECRET"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let listener = TcpListener::bind(bind).map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let sandbox = Sandbox::new(SandboxConfig {
        expires_in,
        apps,
        ..SandboxConfig::default()
    });
    log::info!("sandbox WeChat API listening on http://{bind}");
    sandbox
        .serve(listener)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}
