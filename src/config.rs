//! Command-line and environment configuration: one clap struct per concern, every field also an env var.

use std::net::SocketAddr;

use chrono::FixedOffset;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the stores are; shared by every subcommand that touches them.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// MySQL or MariaDB URL. The default is the instance `make run` starts.
    #[arg(long, env = "DATABASE_URL", default_value = "mysql://stampede:stampede@127.0.0.1:3390/stampede")]
    pub database_url: String,

    /// `redis://host:port` for one node, `redis-cluster://host:port?node=host:port` for a cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6390")]
    pub redis_url: String,

    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "stampede:")]
    pub redis_prefix: String,

    /// MySQL connections per instance; the pay transaction holds one for its whole length.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 32)]
    pub database_pool_size: u32,

    /// Redis connections per instance for requests; each one auto-pipelines, so a few suffice. Background
    /// jobs use one more of their own.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,

    /// Replicas that must acknowledge an issuance (Redis `WAIT`, at most 300 ms) before it is answered 201;
    /// one that is not acknowledged in time is answered 503 (asking again answers 409 while it stands). With
    /// 1, a failover to that replica loses no acknowledged issuance; 0 (the default) does not wait.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
}

/// The admin token `make run` and `make load` use: well known, so only acceptable on loopback.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";

/// Everything `stampede serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Listen address.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,

    #[command(flatten)]
    pub store: StoreConfig,

    /// Bearer token of the admin endpoints; unset means they refuse everything. The development token
    /// (`dev-admin-token`) is refused on an address other than loopback.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Where order events go; unset keeps them in the outbox, delivered to a built-in log sink.
    #[arg(long, env = "DATA_PLATFORM_URL")]
    pub data_platform_url: Option<String>,

    /// Fixed UTC offset of the business day (ranking days, `from`/`to`).
    #[arg(long, env = "BUSINESS_TZ", default_value = "+09:00", value_parser = parse_offset)]
    pub business_tz: FixedOffset,

    #[command(flatten)]
    pub ranking: crate::ranking::Config,

    #[command(flatten)]
    pub limits: crate::balance::Limits,

    #[command(flatten)]
    pub retention: crate::retention::Config,

    #[command(flatten)]
    pub auth: crate::identity::Config,
}

impl ServeConfig {
    /// What the ranking and the relay need of this configuration.
    pub fn ranking_settings(&self) -> crate::ranking::Settings {
        crate::ranking::Settings { business_tz: self.business_tz, shards: self.ranking.shards }
    }
}

impl RebuildConfig {
    /// What the rebuild needs of this configuration.
    pub fn ranking_settings(&self) -> crate::ranking::Settings {
        crate::ranking::Settings { business_tz: self.business_tz, shards: self.ranking_shards }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `stampede` command line.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about)]
pub struct Cli {
    /// `text` for people, `json` for log shippers.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate, load Redis state, serve HTTP and run the background jobs until SIGINT/SIGTERM.
    Serve(Box<ServeConfig>),
    /// Apply the migrations and exit.
    Migrate {
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Fill the database with test data in large batches.
    Seed(SeedConfig),
    /// Ranking maintenance.
    #[command(subcommand)]
    Ranking(RankingCommand),
    /// Print an HS256 token for a user, signed with AUTH_JWT_SECRET (development, tests, load tests).
    Token(TokenConfig),
}

/// What `stampede token` needs.
#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    /// The user the token proves (`sub`).
    #[arg(long, value_parser = parse_user_id)]
    pub user: crate::id::UserId,

    /// Tokens to print, one a line, for users `user`, `user + 1`, ... (load-test scripts read them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub count: u64,

    /// How long the token is valid (`90s`, `15m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = crate::identity::config::parse_duration)]
    pub ttl: std::time::Duration,

    /// The HS256 key the server checks tokens with.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

/// `stampede ranking ...`.
#[derive(Debug, Subcommand)]
pub enum RankingCommand {
    /// Recompute the daily sales sets in Redis from the PAID orders in MySQL (after Redis lost them).
    Rebuild(RebuildConfig),
}

/// What `stampede ranking rebuild` needs.
#[derive(Debug, Clone, Args)]
pub struct RebuildConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Fixed UTC offset of the business day (ranking days, `from`/`to`).
    #[arg(long, env = "BUSINESS_TZ", default_value = "+09:00", value_parser = parse_offset)]
    pub business_tz: FixedOffset,

    /// Sorted sets each day's sales are split into (1..=1024): the layout the rebuild writes.
    #[arg(long, env = "RANKING_SHARDS", default_value = "64", value_parser = crate::ranking::Shards::parse)]
    pub ranking_shards: crate::ranking::Shards,

    /// Days to rebuild, today included.
    #[arg(long, default_value_t = crate::ranking::KEPT_DAYS, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub days: u32,
}

/// What `stampede seed` makes.
#[derive(Debug, Clone, Args)]
pub struct SeedConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Users to create.
    #[arg(long, default_value_t = 0)]
    pub users: u64,

    /// Products to create (price 1,000..100,000 won).
    #[arg(long, default_value_t = 0)]
    pub products: u64,

    /// Options of each product, stock 1,000 each: one is named `default`, more are `option-1`, `option-2`, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub options_per_product: u64,

    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 5_000)]
    pub batch_size: usize,

    /// Coupon campaigns to create (FIXED 1,000 won off, active now, no end), loaded into Redis.
    #[arg(long, default_value_t = 0)]
    pub coupons: u64,

    /// Quantity of each seeded coupon.
    #[arg(long, default_value_t = 1_000)]
    pub coupon_quantity: i64,
}

/// A positive user id.
fn parse_user_id(s: &str) -> Result<crate::id::UserId, String> {
    s.parse::<i64>().ok().and_then(crate::id::UserId::new).ok_or_else(|| format!("{s:?} is not a user id (1..=2^63-1)"))
}

/// Parses `+09:00` / `-05:30` / `Z` into a fixed offset.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    if s == "Z" || s == "UTC" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    s.parse::<FixedOffset>().map_err(|e| format!("not a UTC offset like +09:00: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_of_every_subcommand_is_consistent() {
        // clap checks names, groups and defaults only when a command is built, each subcommand on its own:
        // catch it here, not at start-up.
        fn check(command: &mut clap::Command) {
            command.build();
            for sub in command.get_subcommands_mut() {
                check(sub);
            }
        }
        check(&mut super::Cli::command());
    }
}
