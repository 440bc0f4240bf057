//! The naive design stampede is compared against: coupon issuance decided in MySQL, one transaction per
//! request that locks the coupon row with `SELECT ... FOR UPDATE`, checks the stock and that the user
//! holds none, inserts into `user_coupons` and commits. Every issuer of a coupon queues on that one row
//! lock, which is the cost the Redis design (a Lua script, a background writer) removes.
//!
//! Measured with one caller and with 64 concurrent callers; the time reported is per issuance, so
//! throughput is issuances per second. Every issuance is for a fresh user and the stock never runs out,
//! so each measured call takes the full path (lock, two reads, insert, update, commit).
//!
//! Runs against `DATABASE_URL` (default: the dev MariaDB of `scripts/services.sh start dev`), in a
//! database of its own, `stampede_bench_sql_baseline`, dropped and migrated afresh on every run: real
//! data is never touched. Set-up happens before anything is timed.
//!
//! A second group, `sql_baseline_charge`, is the floor of `POST /users/{id}/balance/charge`: the same
//! transaction the service runs for a charge (guarded `UPDATE balances` returning the new balance through
//! `LAST_INSERT_ID(expr)`, `INSERT` into `balance_history`, commit), done raw with 64 callers over [`CHARGE_USERS`] users whose balance rows
//! exist, as `loadtest/wrk/charge.lua` spreads its requests. The service's charge throughput is reported
//! against it (docs/performance.md).
//!
//! `cargo bench --bench sql_baseline` (or `make bench`); `-- --test` runs each case once; `-- charge` runs
//! only the charge group.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

const DEFAULT_DATABASE_URL: &str = "mysql://stampede:stampede@127.0.0.1:3390/stampede";
/// The concurrent callers of each case.
const CALLERS: [usize; 2] = [1, 64];
/// A stock that no run can exhaust, so every call takes the issuing path.
const STOCK: i64 = i32::MAX as i64;
/// Users the charge baseline spreads its charges over (`USERS=20000` in the wrk command it is compared with).
const CHARGE_USERS: i64 = 20_000;
/// Callers of the charge baseline: the wrk command's 64 connections.
const CHARGE_CALLERS: usize = 64;
/// The service's default balance maximum, for the same guard.
const BALANCE_MAX: i64 = 100_000_000;

/// The prepared database and the next fresh user id.
struct Baseline {
    pool: MySqlPool,
    coupon_id: i64,
    next_user: AtomicI64,
}

/// What the naive transaction decided.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Issued,
    AlreadyIssued,
    SoldOut,
}

/// Recreates the bench database, migrates it and creates the coupon with its stock row.
async fn prepare() -> Baseline {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let server = MySqlConnectOptions::from_str(&url).expect("DATABASE_URL is a MySQL URL");
    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(server.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url} (start it with `scripts/services.sh start dev`): {e}"));
    sqlx::query("DROP DATABASE IF EXISTS stampede_bench_sql_baseline").execute(&admin).await.expect("drop");
    sqlx::query("CREATE DATABASE stampede_bench_sql_baseline").execute(&admin).await.expect("create database");
    admin.close().await;

    let max_callers = *CALLERS.iter().max().expect("callers") as u32;
    let pool = MySqlPoolOptions::new()
        .max_connections(max_callers)
        .min_connections(max_callers)
        .connect_with(server.database("stampede_bench_sql_baseline"))
        .await
        .expect("connect to the bench database");
    stampede::store::mysql::migrate(&pool).await.expect("migrate");
    // The stock column the naive design keeps next to the coupon; bench-only, so not in the migrations.
    sqlx::query("CREATE TABLE bench_coupon_stock (coupon_id BIGINT NOT NULL PRIMARY KEY, remaining BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create the stock table");
    let coupon_id = sqlx::query(
        "INSERT INTO coupons (name, discount_type, discount_value, total_quantity, starts_at)
         VALUES ('sql baseline', 'FIXED', 1000, ?, UTC_TIMESTAMP(6))",
    )
    .bind(STOCK)
    .execute(&pool)
    .await
    .expect("create the coupon")
    .last_insert_id() as i64;
    sqlx::query("INSERT INTO bench_coupon_stock (coupon_id, remaining) VALUES (?, ?)")
        .bind(coupon_id)
        .bind(STOCK)
        .execute(&pool)
        .await
        .expect("create the stock row");
    // The charge baseline's users, each with a balance row, as after their first charge.
    sqlx::query("INSERT INTO users (name) SELECT CONCAT('u', seq) FROM seq_1_to_20000")
        .execute(&pool)
        .await
        .expect("create the charge users");
    sqlx::query("INSERT INTO balances (user_id, amount) SELECT id, 0 FROM users")
        .execute(&pool)
        .await
        .expect("create their balance rows");
    Baseline { pool, coupon_id, next_user: AtomicI64::new(1) }
}

/// The charge transaction of `stampede::balance::db::charge` for a user with a balance row and no
/// idempotency key, statement for statement; the new balance.
async fn charge(pool: &MySqlPool, user_id: i64, amount: i64) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated =
        sqlx::query("UPDATE balances SET amount = LAST_INSERT_ID(amount + ?) WHERE user_id = ? AND amount <= ?")
            .bind(amount)
            .bind(user_id)
            .bind(BALANCE_MAX - amount)
            .execute(&mut *tx)
            .await?;
    assert_eq!(updated.rows_affected(), 1, "user {user_id} has room below the maximum");
    let balance = updated.last_insert_id() as i64;
    sqlx::query(
        "INSERT INTO balance_history (user_id, type, amount, balance_after, order_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind("CHARGE")
    .bind(amount)
    .bind(balance)
    .bind(None::<i64>)
    .bind(chrono::Utc::now().naive_utc())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(balance)
}

/// The naive issuance, in one transaction.
async fn issue(pool: &MySqlPool, coupon_id: i64, user_id: i64) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Every issuer of this coupon waits here for the one before it to commit.
    sqlx::query("SELECT id FROM coupons WHERE id = ? FOR UPDATE").bind(coupon_id).fetch_one(&mut *tx).await?;
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM bench_coupon_stock WHERE coupon_id = ?")
        .bind(coupon_id)
        .fetch_one(&mut *tx)
        .await?;
    if remaining <= 0 {
        return Ok(Outcome::SoldOut);
    }
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = ? AND user_id = ?")
        .bind(coupon_id)
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    if held > 0 {
        return Ok(Outcome::AlreadyIssued);
    }
    sqlx::query("INSERT INTO user_coupons (coupon_id, user_id, issued_at) VALUES (?, ?, UTC_TIMESTAMP(6))")
        .bind(coupon_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE bench_coupon_stock SET remaining = remaining - 1 WHERE coupon_id = ?")
        .bind(coupon_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Outcome::Issued)
}

impl Baseline {
    /// `total` calls of `call` (given the baseline and the next number of [`Baseline::next_user`]) by
    /// `callers` concurrent tasks, each claiming one call at a time; the wall time they took.
    async fn spread<F, Fut>(self: Arc<Self>, total: u64, callers: usize, call: F) -> Duration
    where
        F: Fn(Arc<Self>, i64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let left = Arc::new(AtomicU64::new(total));
        let started = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (baseline, left, call) = (Arc::clone(&self), Arc::clone(&left), call.clone());
                tokio::spawn(async move {
                    while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                        let n = baseline.next_user.fetch_add(1, Ordering::Relaxed);
                        call(Arc::clone(&baseline), n).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("caller task");
        }
        started.elapsed()
    }

    /// `total` issuances for fresh users by `callers` concurrent tasks; the wall time they took.
    async fn run(self: Arc<Self>, total: u64, callers: usize) -> Duration {
        self.spread(total, callers, |baseline, user_id| async move {
            let outcome = issue(&baseline.pool, baseline.coupon_id, user_id).await.expect("issue");
            assert_eq!(outcome, Outcome::Issued, "a fresh user with stock left is issued");
        })
        .await
    }

    /// `total` charges of 1 won by [`CHARGE_CALLERS`] tasks, user ids cycling over [`CHARGE_USERS`]; the wall
    /// time they took.
    async fn charges(self: Arc<Self>, total: u64) -> Duration {
        self.spread(total, CHARGE_CALLERS, |baseline, n| async move {
            charge(&baseline.pool, 1 + n % CHARGE_USERS, 1).await.expect("charge");
        })
        .await
    }
}

fn sql_baseline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let baseline = Arc::new(runtime.block_on(prepare()));
    let mut group = c.benchmark_group("sql_baseline_issue");
    // Per element: the report's throughput is issuances per second.
    group.throughput(Throughput::Elements(1));
    // Each sample is many commits; fewer samples keep a run to a few minutes.
    group.sample_size(20);
    for callers in CALLERS {
        group.bench_with_input(BenchmarkId::new("callers", callers), &callers, |b, &callers| {
            b.to_async(&runtime).iter_custom(|total| Arc::clone(&baseline).run(total, callers));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sql_baseline_charge");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("callers", CHARGE_CALLERS), |b| {
        b.to_async(&runtime).iter_custom(|total| Arc::clone(&baseline).charges(total));
    });
    group.finish();
}

criterion_group!(benches, sql_baseline);
criterion_main!(benches);
