//! Coupons stay exact when Redis loses data (docs/coupons.md, "Redis losing data"): wiped keys, FLUSHALL,
//! a SIGKILLed Redis restarted from its append-only file, a Redis brought back from an older file; with the
//! writer holding a batch at each of its handover points, made deterministic by holding MySQL row locks or
//! by driving the writer's steps by hand. Every test ends with at most Q rows, nobody twice, and every user
//! MySQL holds refused a second time.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use fred::prelude::*;
use futures::StreamExt;
use reqwest::StatusCode;
use sqlx::MySqlPool;
use stampede::coupon;
use stampede::coupon::cache::IssueReply;
use stampede::coupon::writer::{Outcome, Writer};
use stampede::id::{CouponId, UserId};
use stampede::state::AppState;
use stampede::store::Stores;

use crate::coupons::{
    app_without_writer, campaign, create_coupon, create_users, progress, script_issue, seed, stampede, wait_persisted,
    winners,
};
use crate::support::{RedisServer, TestApp, eventually, isolated_store, serve_config};

/// How long a test waits for the service to notice a lock or a restarted Redis.
pub(crate) const NOTICE: Duration = Duration::from_secs(20);

/// Deletes every Redis key of one coupon, as an operator's mistake or an eviction would.
pub(crate) async fn delete_coupon_keys(stores: &Stores, coupon: i64) {
    let keys: Vec<String> = ["meta", "stock", "issued", "queue"]
        .iter()
        .map(|what| format!("{}coupon:{{{coupon}}}:{what}", stores.redis.keys.prefix()))
        .collect();
    let _: i64 = stores.redis.client().del(keys).await.unwrap();
}

/// Transactions of this test's database waiting for a row lock.
pub(crate) async fn lock_waits(db: &MySqlPool) -> i64 {
    let waiting: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(trx_mysql_thread_id AS SIGNED) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let ours: HashSet<i64> =
        sqlx::query_scalar("SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = DATABASE()")
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    waiting.iter().filter(|thread| ours.contains(thread)).count() as i64
}

/// Waits until exactly `count` transactions of this database wait for a lock.
pub(crate) async fn wait_for_lock_waits(db: &MySqlPool, count: i64) {
    wait_for_lock_waits_where(db, |waiting| waiting == count, &format!("{count} transactions waiting for a lock"))
        .await;
}

/// Waits until at least `count` transactions of this database wait for a row lock: for tests where another
/// instance's writer may wait on the same lock too.
pub(crate) async fn wait_for_lock_waits_at_least(db: &MySqlPool, count: i64, what: &str) {
    wait_for_lock_waits_where(db, |waiting| waiting >= count, what).await;
}

/// Polls the transactions of this database waiting for a lock until `enough` says so. Every 250 ms: MariaDB
/// refreshes its `innodb_trx` table only when it was last read over 100 ms ago, so faster polling keeps
/// reading the same stale copy.
async fn wait_for_lock_waits_where(db: &MySqlPool, enough: impl Fn(i64) -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + NOTICE;
    while !enough(lock_waits(db).await) {
        assert!(tokio::time::Instant::now() < deadline, "not within {NOTICE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Locks every `user_coupons` row of `coupon` and the gaps between them, as a slow MySQL would: the writer's
/// inserts of that coupon wait until the returned transaction ends.
pub(crate) async fn hold_rows(db: &MySqlPool, coupon: i64) -> sqlx::Transaction<'static, sqlx::MySql> {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SELECT user_id FROM user_coupons WHERE coupon_id = ? FOR UPDATE")
        .bind(coupon)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx
}

/// The users MySQL holds `coupon` for; asserts there are at most `quantity` and none twice.
pub(crate) async fn rows_within_quantity(db: &MySqlPool, coupon: i64, quantity: usize) -> HashSet<i64> {
    let users: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_all(db)
        .await
        .unwrap();
    let distinct: HashSet<i64> = users.iter().copied().collect();
    assert_eq!(distinct.len(), users.len(), "a user twice");
    assert!(users.len() <= quantity, "{} rows for a quantity of {quantity}", users.len());
    distinct
}

/// Every user MySQL holds the coupon for asks again: each is refused with 409.
pub(crate) async fn holders_are_refused_again(app: &TestApp, coupon: i64, holders: &HashSet<i64>) {
    let again = stampede(&[app], holders.iter().map(|user| (coupon, *user)).collect()).await;
    for (user, status) in again {
        assert_eq!(status, StatusCode::CONFLICT, "user {user} holds coupon {coupon} in MySQL");
    }
}

/// Waits until the writer has persisted everything Redis says was issued.
pub(crate) async fn caught_up(app: &TestApp, coupon: i64) {
    eventually("persisted == issued", NOTICE, || async {
        let body = progress(app, coupon).await;
        body["persisted"] == body["issued"]
    })
    .await;
}

/// Waits until every instance is ready again after Redis came back.
async fn ready_again(apps: &[&TestApp]) {
    eventually("ready again", NOTICE, || async {
        for app in apps {
            if app.get("/health/ready").await.0 != StatusCode::OK {
                return false;
            }
        }
        true
    })
    .await;
}

/// Issues `coupon` to `users` in one script call, so the writer takes them as one stream entry.
pub(crate) async fn issue_as_one_entry(stores: &Stores, coupon: i64, users: &[i64]) {
    let replies = script_issue(stores, CouponId::new(coupon).unwrap(), users).await;
    assert!(replies.iter().all(|reply| matches!(reply, IssueReply::Issued(_))), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_waits_for_the_batch_the_writer_holds_in_its_transaction_so_q_is_never_exceeded() {
    let app = TestApp::spawn().await;
    let stores = &app.state.stores;
    let users = create_users(stores, 260).await;
    let coupon = create_coupon(&app, 100).await;
    let first = stampede(&[&app], users[..60].iter().map(|user| (coupon, *user)).collect()).await;
    assert_eq!(winners(&first).len(), 60);
    wait_persisted(&app, coupon, 60).await;

    // MySQL slow on this coupon: the writer takes the next 30 and waits inside its transaction.
    let lock = hold_rows(app.db(), coupon).await;
    issue_as_one_entry(stores, coupon, &users[60..90]).await;
    wait_for_lock_waits(app.db(), 1).await;
    delete_coupon_keys(stores, coupon).await;
    let release_once_the_rebuild_waits = async {
        // The writer on the held rows, the rebuild on the writer's lock of the coupon row.
        wait_for_lock_waits(app.db(), 2).await;
        lock.commit().await.unwrap();
    };
    let apps = [&app];
    let (late, ()) = tokio::join!(
        stampede(&apps, users[90..].iter().map(|user| (coupon, *user)).collect()),
        release_once_the_rebuild_waits
    );

    assert_eq!(winners(&late).len(), 10, "the rebuild counted the 30 the writer held");
    let body = wait_persisted(&app, coupon, 100).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(100), Some(0)));
    let holders = rows_within_quantity(app.db(), coupon, 100).await;
    assert!(winners(&late).iter().all(|user| holders.contains(user)));
    holders_are_refused_again(&app, coupon, &holders).await;
}

/// Where a writer is stopped while Redis loses the coupon's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Handover {
    /// The batch read from Redis, nothing written to MySQL.
    AfterRead,
    /// The batch committed to MySQL, not yet acknowledged in Redis.
    AfterCommit,
}

/// Quantity 10: 6 issued and persisted, 4 more read by a writer stopped at `stop`; the coupon's keys
/// deleted; 20 new users ask (the rebuild runs, waiting for the writer's lock while it holds a batch), then
/// the writer goes on. First come, first served: the 4 the writer held keep their coupons, and no later
/// asker gets their stock.
async fn wipe_at(stop: Handover) {
    let app = app_without_writer().await;
    let state: &AppState = app.state();
    let stores = &state.stores;
    let users = create_users(stores, 30).await;
    let coupon = campaign(state, 10).await;
    let mut writer = Writer::new();
    script_issue(stores, coupon, &users[..6]).await;
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 6, backlog: false });
    issue_as_one_entry(stores, coupon.get(), &users[6..10]).await;
    assert_eq!(writer.take_batch(stores).await.unwrap(), 1);
    if stop == Handover::AfterCommit {
        assert_eq!(writer.persist(stores).await.unwrap(), 4);
    }

    delete_coupon_keys(stores, coupon.get()).await;
    let asks = users[10..].iter().map(|user| state.coupons.issue(coupon, UserId::new(*user).unwrap()));
    let resume = async {
        if stop == Handover::AfterRead {
            // The rebuild waits for the coupon row the writer locked before it read its batch.
            wait_for_lock_waits(&stores.db, 1).await;
        }
        writer.persist(stores).await.unwrap();
        writer.acknowledge(stores).await.unwrap();
    };
    let (late, ()) = tokio::join!(futures::future::join_all(asks), resume);
    let late_winners = late.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(late_winners, 0, "{stop:?}: the rebuild gave the held batch's stock away");

    while writer.drain_once(stores).await.unwrap() != Outcome::Idle {}
    let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon.get())
        .fetch_all(&stores.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 10, "{stop:?}");
    assert_eq!(rows.iter().collect::<HashSet<_>>(), users[..10].iter().collect::<HashSet<_>>(), "{stop:?}");
    for user in rows {
        let again = state.coupons.issue(coupon, UserId::new(user).unwrap());
        assert!(matches!(again.await, Err(coupon::Error::AlreadyIssued { .. })), "{stop:?}: user {user}");
    }
    let (issued, remaining) = coupon::cache::counts(&stores.redis, coupon).await.unwrap();
    assert_eq!((issued, remaining), (10, 0), "{stop:?}");
}

#[tokio::test]
async fn a_wipe_after_the_writer_read_a_batch_waits_for_it_and_keeps_its_winners() {
    wipe_at(Handover::AfterRead).await;
}

#[tokio::test]
async fn a_wipe_after_the_writer_committed_a_batch_counts_it_and_the_writer_does_not_stall() {
    wipe_at(Handover::AfterCommit).await;
}

/// An app on its own Redis server (the test flushes or restarts it).
pub(crate) async fn app_on(redis: &RedisServer) -> TestApp {
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    TestApp::spawn_with(serve_config(store)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushall_while_two_coupons_sell_on_two_instances_leaves_both_persisted_as_issued() {
    let redis = RedisServer::start();
    let app = app_on(&redis).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let stores = &app.state.stores;
    let users = create_users(stores, 100).await;
    let (a, b) = (create_coupon(&app, 50).await, create_coupon(&app, 50).await);

    let lock = hold_rows(app.db(), a).await;
    issue_as_one_entry(stores, a, &users[..10]).await;
    issue_as_one_entry(stores, b, &users[..10]).await;
    // The writer holding both; the other instance's writer may wait for their coupon rows too.
    wait_for_lock_waits_at_least(app.db(), 1, "the writer holds the batch").await;
    let _: () = stores.redis.client().flushall(false).await.unwrap();
    lock.commit().await.unwrap();
    // Only B is asked afterwards.
    let late = stampede(&[&app, &other], users[10..90].iter().map(|user| (b, *user)).collect()).await;

    assert_eq!(winners(&late).len(), 40, "B had 10 issued and 50 in all");
    for coupon in [a, b] {
        caught_up(&app, coupon).await;
        let holders = rows_within_quantity(app.db(), coupon, 50).await;
        holders_are_refused_again(&other, coupon, &holders).await;
    }
    assert_eq!(progress(&app, b).await["persisted"], 50);
}

/// Kills Redis (SIGKILL) right after a burst the writer could not persist (its rows held), restarts it from
/// its append-only file, and sells on. Returns the winners before and after and the rows MySQL ends with.
async fn kill_redis_after_a_burst(fsync: &str) -> (HashSet<i64>, HashSet<i64>, HashSet<i64>) {
    let args = ["--save", "", "--appendonly", "yes", "--appendfsync", fsync];
    let mut redis = RedisServer::start_with(&args);
    let app = app_on(&redis).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 400).await;
    let coupon = create_coupon(&app, 300).await;
    let lock = hold_rows(app.db(), coupon).await;
    let burst = stampede(&[&app, &other], users[..200].iter().map(|user| (coupon, *user)).collect()).await;
    redis.kill();
    lock.commit().await.unwrap();
    redis.resume(&args);
    ready_again(&[&app, &other]).await;

    let after = stampede(&[&app, &other], users.iter().map(|user| (coupon, *user)).collect()).await;
    let first: HashSet<i64> = winners(&burst).into_iter().collect();
    let second: HashSet<i64> = winners(&after).into_iter().collect();
    caught_up(&app, coupon).await;
    let holders = rows_within_quantity(app.db(), coupon, 300).await;
    holders_are_refused_again(&app, coupon, &holders).await;
    (first, second, holders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_appendfsync_always_a_sigkilled_redis_loses_no_201() {
    let (first, second, holders) = kill_redis_after_a_burst("always").await;
    assert_eq!(first.len(), 200);
    assert!(first.is_disjoint(&second), "a user won twice");
    assert!(first.is_subset(&holders), "a 201 of the burst is missing from MySQL");
    assert_eq!(holders.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_appendfsync_everysec_a_sigkilled_redis_never_over_issues() {
    // What the last second lost may be sold again (to its own users too); MySQL still ends within Q.
    let (first, _, holders) = kill_redis_after_a_burst("everysec").await;
    assert_eq!(first.len(), 200);
    assert!(holders.len() <= 300);
    // The 201s of the burst Redis lost (SIGKILL within a second of them): reported, bounded by the burst.
    let lost = first.difference(&holders).count();
    eprintln!("appendfsync everysec: {lost} of {} 201s lost to the SIGKILL", first.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_brought_back_from_an_older_file_is_detected_and_rebuilt_before_it_issues() {
    let args = ["--save", "", "--appendonly", "no"];
    let mut redis = RedisServer::start_with(&args);
    let app = app_on(&redis).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 200).await;
    let coupon = create_coupon(&app, 100).await;
    stampede(&[&app, &other], users[..30].iter().map(|user| (coupon, *user)).collect()).await;
    wait_persisted(&app, coupon, 30).await;
    let cli = |command: &str| {
        let port = redis.port.to_string();
        let done = Command::new("redis-cli").args(["-p", &port, command]).output().expect("run redis-cli");
        assert!(done.status.success(), "redis-cli {command}");
    };
    cli("SAVE");
    let (current, older) = (redis.dir.join("dump.rdb"), redis.dir.join("older.rdb"));
    std::fs::copy(&current, &older).unwrap();
    stampede(&[&app, &other], users[30..60].iter().map(|user| (coupon, *user)).collect()).await;
    wait_persisted(&app, coupon, 60).await;

    redis.kill();
    std::fs::copy(&older, &current).unwrap();
    redis.resume(&args);
    ready_again(&[&app, &other]).await;
    let after = stampede(&[&app, &other], users.iter().map(|user| (coupon, *user)).collect()).await;

    assert_eq!(winners(&after).len(), 40, "the 60 MySQL holds are refused, 40 left");
    for (user, status) in &after {
        if users[..60].contains(user) {
            assert_eq!(*status, StatusCode::CONFLICT, "user {user} holds it in MySQL");
        }
    }
    wait_persisted(&app, coupon, 100).await;
    rows_within_quantity(app.db(), coupon, 100).await;
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("coupon_state_rebuilds_total{cause=\"rollback\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_redis_answers_503_with_retry_after_and_ready_says_why() {
    let redis = RedisServer::start();
    let app = app_on(&redis).await;
    let user = app.create_user("busy").await;
    let coupon = create_coupon(&app, 10).await;
    let port = redis.port.to_string();
    let cli = |args: &[&str]| Command::new("redis-cli").args(["-p", &port]).args(args).output().expect("redis-cli");
    cli(&["CONFIG", "SET", "busy-reply-threshold", "50"]);
    // A script that never ends holds Redis until SCRIPT KILL; Redis answers everyone else BUSY meanwhile.
    let mut endless = Command::new("redis-cli")
        .args(["-p", &port, "EVAL", "while true do end", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("Redis answers BUSY", NOTICE, || async {
        String::from_utf8_lossy(&cli(&["PING"]).stdout).starts_with("BUSY")
    })
    .await;

    let response = app.as_user(reqwest::Method::POST, &format!("/api/v1/coupons/{coupon}/issue"), user);
    let response = response.json(&serde_json::json!({ "userId": user })).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready["checks"]["redis"].as_str().unwrap().contains("BUSY"), "{ready}");

    cli(&["SCRIPT", "KILL"]);
    endless.wait().unwrap();
    let (status, body) =
        app.post(&format!("/api/v1/coupons/{coupon}/issue"), serde_json::json!({ "userId": user })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_of_restore_points_never_issues_twice_or_beyond_the_quantity() {
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 30;
    let args = ["--save", "", "--appendonly", "no"];
    let mut redis = RedisServer::start_with(&args);
    let app = app_on(&redis).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 400).await;
    let coupon = create_coupon(&app, 300).await;
    let port = redis.port.to_string();
    // A snapshot right after each round of a burst: the last ones are taken before the writer caught up.
    let mut snapshots = Vec::new();
    for round in 0..ROUNDS {
        let asking = &users[round * PER_ROUND..(round + 1) * PER_ROUND];
        stampede(&[&app, &other], asking.iter().map(|user| (coupon, *user)).collect()).await;
        assert!(Command::new("redis-cli").args(["-p", &port, "SAVE"]).status().unwrap().success());
        let snapshot = redis.dir.join(format!("round-{round}.rdb"));
        std::fs::copy(redis.dir.join("dump.rdb"), &snapshot).unwrap();
        snapshots.push(snapshot);
    }
    wait_persisted(&app, coupon, (ROUNDS * PER_ROUND) as i64).await;

    // Newest first, then ever older: each restore goes further back than the rebuild before it.
    for snapshot in snapshots.iter().rev() {
        redis.kill();
        std::fs::copy(snapshot, redis.dir.join("dump.rdb")).unwrap();
        redis.resume(&args);
        ready_again(&[&app, &other]).await;
        let holders = rows_within_quantity(app.db(), coupon, 300).await;
        assert_eq!(holders.len(), ROUNDS * PER_ROUND, "{}", snapshot.display());
        holders_are_refused_again(&app, coupon, &holders).await;
    }
    let rest = stampede(&[&app, &other], users.iter().map(|user| (coupon, *user)).collect()).await;
    assert_eq!(winners(&rest).len(), 300 - ROUNDS * PER_ROUND);
    wait_persisted(&app, coupon, 300).await;
    rows_within_quantity(app.db(), coupon, 300).await;
}

/// Another client flushing `redis`'s script cache every 20 ms until the returned flag is set; the task
/// answers how many flushes it made.
fn flush_scripts_every_20_ms(
    redis: &RedisServer,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<u32>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = redis.url();
    let flushing = tokio::spawn({
        let stop = stop.clone();
        async move {
            let flusher = Client::new(fred::types::config::Config::from_url(&url).unwrap(), None, None, None);
            flusher.init().await.unwrap();
            let mut flushes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = flusher.script_flush(false).await.unwrap();
                flushes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            flushes
        }
    });
    (stop, flushing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_calls_survive_scripts_flushed_again_and_again_while_they_run() {
    let redis = RedisServer::start();
    let app = app_on(&redis).await;
    let users = create_users(&app.state.stores, 300).await;
    let coupons = [create_coupon(&app, 100).await, create_coupon(&app, 100).await, create_coupon(&app, 100).await];
    // Another client flushes the script cache every 20 ms, as the shared test Redis sees when other tests
    // flush it: every script call must reload and retry, never answer 500.
    let (stop, flushing) = flush_scripts_every_20_ms(&redis);
    let requests = users.iter().enumerate().map(|(n, user)| (coupons[n % 3], *user)).collect();
    let results = stampede(&[&app], requests).await;
    let created = futures::future::join_all((0..10).map(|_| create_coupon(&app, 5))).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flushing.await.unwrap();

    assert!(flushes >= 2, "the scripts were flushed {flushes} times while the requests ran");
    assert_eq!(winners(&results).len(), 300, "every user got their coupon");
    assert_eq!(created.len(), 10);
    for coupon in coupons {
        wait_persisted(&app, coupon, 100).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeding_and_issuing_never_answer_500_while_the_scripts_are_flushed_again_and_again() {
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let (stop, flushing) = flush_scripts_every_20_ms(&redis);
    // Seeding loads the scripts and creates coupons (a load script per coupon) under the flushes, then an
    // instance starts (its check of every coupon runs scripts) and 100 users ask for each coupon twice.
    let seeded = seed(&store, 100, 4, 30).await;
    let app = TestApp::spawn_with(serve_config(store)).await;
    let first = seeded.first_user.unwrap().get();
    let requests: Vec<(i64, i64)> = seeded
        .coupons
        .iter()
        .flat_map(|coupon| (first..first + 100).flat_map(move |user| [(coupon.get(), user), (coupon.get(), user)]))
        .collect();
    let statuses: Vec<StatusCode> = futures::stream::iter(requests)
        .map(|(coupon, user)| {
            let app = &app;
            async move {
                app.post(&format!("/api/v1/coupons/{coupon}/issue"), serde_json::json!({ "userId": user })).await.0
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flushing.await.unwrap();

    assert!(flushes >= 5, "the scripts were flushed {flushes} times while seeding and issuing");
    let count = |status: StatusCode| statuses.iter().filter(|s| **s == status).count();
    assert_eq!(count(StatusCode::INTERNAL_SERVER_ERROR), 0, "{statuses:?}");
    assert_eq!(count(StatusCode::CREATED), 4 * 30, "exactly the quantity of each coupon");
    assert_eq!(count(StatusCode::CREATED) + count(StatusCode::CONFLICT) + count(StatusCode::GONE), 800, "{statuses:?}");
    for coupon in &seeded.coupons {
        wait_persisted(&app, coupon.get(), 30).await;
    }
}
