//! The `stampede` binary: parse the command line, start telemetry, dispatch.

use std::process::ExitCode;

use clap::Parser;
use stampede::app::App;
use stampede::config::{Cli, Command, RankingCommand};
use stampede::store::{StoreError, mysql};
use tokio_util::sync::CancellationToken;

/// mimalloc: the request path allocates small, short-lived buffers on every request; glibc's malloc
/// spent ~15% of the issue endpoint's CPU in a profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    stampede::telemetry::init_logs(cli.log_format);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Migrate { store } => migrate(&store.database_url).await.map_err(Into::into),
        Command::Seed(config) => seed(&config).await,
        Command::Ranking(RankingCommand::Rebuild(config)) => rebuild_ranking(&config).await,
        Command::Token(config) => print_tokens(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error_chain(error.as_ref()), "stampede failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: stampede::config::ServeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let db = mysql::connect(database_url, 1).await?;
    mysql::migrate(&db).await?;
    println!("migrations applied");
    Ok(())
}

async fn seed(config: &stampede::config::SeedConfig) -> Result<(), Box<dyn std::error::Error>> {
    let seeded = stampede::seed::run(config).await?;
    if let (Some(first), Some(last)) = (seeded.first_user, seeded.last_user) {
        println!("users: {first}..={last}");
    }
    println!("products: {}", seeded.products);
    if !seeded.coupons.is_empty() {
        let ids: Vec<String> = seeded.coupons.iter().map(ToString::to_string).collect();
        println!("coupons: {}", ids.join(" "));
    }
    Ok(())
}

async fn rebuild_ranking(config: &stampede::config::RebuildConfig) -> Result<(), Box<dyn std::error::Error>> {
    use stampede::ranking;
    let stores = stampede::store::Stores::connect(&config.store).await?;
    let now = chrono::Utc::now();
    for day in ranking::rebuild(&stores, config.ranking_settings(), config.days, now).await? {
        println!("{}: {} orders, {} units", day.day, day.orders, day.units);
    }
    let top = ranking::refresh(&stores, config.ranking_settings(), now).await?;
    println!("ranking refreshed: {} products in the top of {}..={}", top.products.len(), top.from, top.to);
    Ok(())
}

/// `stampede token`: one token a line, for `--count` users from `--user` on.
fn print_tokens(config: &stampede::config::TokenConfig) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for n in 0..config.count {
        let user = config
            .user
            .get()
            .checked_add(n as i64)
            .and_then(stampede::id::UserId::new)
            .ok_or("--user + --count passes the largest id")?;
        writeln!(out, "{}", stampede::identity::token::mint(config.secret.as_bytes(), user, config.ttl))?;
    }
    out.flush()?;
    Ok(())
}

/// Cancels the shared token on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}

/// `outer: cause: root cause`, so a log line shows why, not just what.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
