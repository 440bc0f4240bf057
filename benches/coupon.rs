//! Coupon issuance speed: the issue script through fred (one caller, then 64 concurrent callers), and the
//! HTTP issue handler in-process (tower `oneshot` on the full router: middleware, user check, script).
//!
//! Runs against `DATABASE_URL` / `REDIS_URL` (default: the dev services, `scripts/services.sh start dev`)
//! under its own key prefix. Every measured batch gets a fresh coupon whose quantity is the batch size and
//! fresh user ids, so each timed call is a successful issuance (the slowest outcome). Set-up is outside the
//! timed part. No writer runs: the streams keep what the bench issued until the tear-down deletes the keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use stampede::app::App;
use stampede::config::ServeConfig;
use stampede::coupon::cache::IssueReply;
use stampede::coupon::{CouponSpec, DiscountType, NewCoupon};
use stampede::id::{CouponId, UserId};
use stampede::state::AppState;
use tower::ServiceExt;

/// Concurrent callers of the second script benchmark.
const CALLERS: u64 = 64;

/// `ServeConfig` from the environment (clap reads DATABASE_URL, REDIS_URL), with a prefix of our own.
#[derive(Parser)]
struct BenchConfig {
    #[command(flatten)]
    serve: ServeConfig,
}

fn config() -> ServeConfig {
    let prefix = format!("bench-coupon-{}:", uuid::Uuid::new_v4().simple());
    // AUTH_MODE=none: this measures the issue path itself; benches/identity.rs measures what a token adds.
    let args = [
        "bench",
        "--bind-addr",
        "127.0.0.1:0",
        "--redis-prefix",
        &prefix,
        "--admin-token",
        "bench",
        "--auth-mode",
        "none",
    ];
    BenchConfig::parse_from(args).serve
}

/// Shared set-up: the built (not running) app and the highest user id already marked known in Redis.
struct Bench {
    state: AppState,
    /// Next user id to hand out; ids are never reused, so every issuance is a first one.
    next_user: AtomicI64,
    /// Users below this id are marked in the Redis existence bitmap.
    known_below: AtomicI64,
}

impl Bench {
    /// A coupon with `quantity` stock and `quantity` fresh user ids (marked as existing in Redis, which is
    /// all the issue path checks).
    async fn batch(&self, quantity: u64) -> (CouponId, Vec<UserId>) {
        let quantity = quantity.max(1) as i64;
        let new =
            NewCoupon::parse(CouponSpec::open_ended("bench", DiscountType::Fixed, 100, quantity), chrono::Utc::now())
                .expect("valid coupon");
        let coupon = self.state.coupons.create(new).await.expect("create coupon");
        let first = self.next_user.fetch_add(quantity, Ordering::Relaxed);
        let users: Vec<UserId> = (first..first + quantity).filter_map(UserId::new).collect();
        let known = self.known_below.load(Ordering::Relaxed);
        let unknown: Vec<UserId> = users.iter().copied().filter(|u| u.get() >= known).collect();
        for chunk in unknown.chunks(50_000) {
            stampede::user::cache::remember(&self.state.stores.redis, chunk).await.expect("mark users");
        }
        self.known_below.fetch_max(first + quantity, Ordering::Relaxed);
        (coupon.id, users)
    }
}

async fn issue_script(bench: &Bench, coupon: CouponId, user: UserId) {
    let reply = bench.state.coupons.issuer().issue(coupon, user).await.expect("script runs");
    assert!(matches!(reply, IssueReply::Issued(_)), "{reply:?}");
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let app = rt.block_on(App::build(config())).expect("build app against DATABASE_URL / REDIS_URL");
    let bench = Arc::new(Bench { state: app.state().clone(), next_user: AtomicI64::new(1), known_below: 1.into() });
    let router = stampede::http::router(bench.state.clone());

    let mut group = c.benchmark_group("coupon_issue");
    group.bench_function("script_1_caller", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let (coupon, users) = bench.batch(iters).await;
                let started = Instant::now();
                for user in users {
                    issue_script(&bench, coupon, user).await;
                }
                started.elapsed()
            }
        });
    });

    group.bench_function("script_64_callers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let (coupon, users) = bench.batch(iters).await;
                let per_caller = users.len().div_ceil(CALLERS as usize);
                let started = Instant::now();
                let callers: Vec<_> = users
                    .chunks(per_caller)
                    .map(|chunk| {
                        let (bench, chunk) = (bench.clone(), chunk.to_vec());
                        tokio::spawn(async move {
                            for user in chunk {
                                issue_script(&bench, coupon, user).await;
                            }
                        })
                    })
                    .collect();
                for caller in callers {
                    caller.await.expect("caller task");
                }
                // Time per issuance with 64 in flight: the inverse of throughput.
                started.elapsed()
            }
        });
    });

    group.bench_function("http_handler_oneshot", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (bench, router) = (bench.clone(), router.clone());
            async move {
                let (coupon, users) = bench.batch(iters).await;
                let requests: Vec<Request<Body>> = users
                    .iter()
                    .map(|user| {
                        Request::post(format!("/api/v1/coupons/{coupon}/issue"))
                            .header("content-type", "application/json")
                            .body(Body::from(format!(r#"{{"userId":{user}}}"#)))
                            .expect("valid request")
                    })
                    .collect();
                let started = Instant::now();
                for request in requests {
                    let response = router.clone().oneshot(request).await.expect("infallible");
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
                started.elapsed()
            }
        });
    });
    group.finish();

    rt.block_on(tear_down(&bench.state));
}

/// Deletes every key under the bench's prefix (a dev server: KEYS is acceptable here).
async fn tear_down(state: &AppState) {
    let redis = &state.stores.redis;
    let pattern = redis.keys.key("*");
    let keys: Vec<String> = redis
        .client()
        .custom(CustomCommand::new_static("KEYS", ClusterHash::Random, false), vec![pattern])
        .await
        .expect("KEYS");
    for chunk in keys.chunks(1_000) {
        let _: i64 = redis.client().del(chunk.to_vec()).await.expect("DEL");
    }
}

criterion_group! {
    name = coupon_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(coupon_benches);
