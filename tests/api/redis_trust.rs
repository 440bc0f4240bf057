//! Redis is checked, not trusted (docs/coupons.md, "Redis losing data"): a failover to a replica that lagged
//! while the writer holds a batch, a fresh database beside a Redis that kept an earlier sale under the same
//! prefix, one key of a coupon deleted while `meta` survives, and a Redis that would evict keys. Each ends
//! with at most Q rows, nobody twice, every holder refused again and `issued == persisted`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use stampede::app::App;
use stampede::coupon;
use stampede::id::{CouponId, UserId};
use stampede::state::AppState;
use stampede::store::Stores;

use crate::coupons::{campaign, create_coupon, create_users, script_issue, stampede, wait_persisted, winners};
use crate::redis_loss::{
    NOTICE, caught_up, hold_rows, holders_are_refused_again, issue_as_one_entry, lock_waits, rows_within_quantity,
    wait_for_lock_waits_at_least,
};
use crate::support::{Proxy, RedisServer, TestApp, eventually, isolated_store, serve_config};

/// Asks for `coupon` once per user, spread over `apps`, asking again while the answer is 503 (the service
/// holds issuance while it checks Redis); returns `(user, final status)`, counting the 201s into `issued` as
/// they come.
async fn ask_until_decided(
    apps: &[&TestApp],
    coupon: i64,
    users: &[i64],
    issued: &AtomicUsize,
) -> Vec<(i64, StatusCode)> {
    futures::stream::iter(users.iter().enumerate())
        .map(|(n, &user)| {
            let app = apps[n % apps.len()];
            async move {
                let started = tokio::time::Instant::now();
                loop {
                    let (status, body) =
                        app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
                    if status == StatusCode::CREATED {
                        issued.fetch_add(1, Ordering::AcqRel);
                    }
                    if status != StatusCode::SERVICE_UNAVAILABLE {
                        assert!(
                            [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::GONE].contains(&status),
                            "{status} {body}"
                        );
                        return (user, status);
                    }
                    assert!(started.elapsed() < NOTICE, "user {user} still answered 503 after {NOTICE:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .buffer_unordered(200)
        .collect()
        .await
}

/// A connection of its own to `server`, for commands the test gives Redis directly.
async fn connect(server: &RedisServer) -> Client {
    let client = Client::new(Config::from_url(&server.url()).unwrap(), None, None, None);
    client.init().await.unwrap();
    client
}

/// A replica of the Redis on `master_port`, once in sync, with a connection of its own.
async fn replica_of(master_port: u16) -> (RedisServer, Client) {
    let port = master_port.to_string();
    let replica = RedisServer::start_with(&["--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &port]);
    let to_replica = connect(&replica).await;
    eventually("the replica is in sync", NOTICE, || async {
        let info: String = to_replica.info(Some(fred::types::InfoKind::Replication)).await.unwrap();
        info.contains("master_link_status:up")
    })
    .await;
    (replica, to_replica)
}

/// A master and a replica in sync, and the proxy the service reaches the master through.
async fn master_with_replica() -> (RedisServer, RedisServer, Client, Proxy) {
    let master = RedisServer::start();
    let (replica, to_replica) = replica_of(master.port).await;
    let proxy = Proxy::start(master.port).await;
    (master, replica, to_replica, proxy)
}

/// `REPLICAOF NO ONE` on the replica.
async fn promote(to_replica: &Client) {
    let replicaof = fred::types::CustomCommand::new_static("REPLICAOF", fred::types::ClusterHash::Random, false);
    let _: () = to_replica.custom(replicaof, vec!["NO", "ONE"]).await.unwrap();
}

/// Quantity 100 on a master with one replica, reached through a proxy: 40 issued, persisted and replicated;
/// the replica promoted (so it lags from then on); the writer holds 30 more, read from the master, inside its
/// transaction (a row lock keeps it there); the master killed and the proxy repointed to the replica; 130 new users ask, and the
/// writer is let go once the service's check of the promoted replica waits for it. The check finds the
/// replica behind what the writer committed and rebuilds: exactly 30 of the 130 win.
async fn failover_to_a_lagging_replica(instances: usize) {
    let (mut master, replica, to_replica, proxy) = master_with_replica().await;
    let mut store = isolated_store().await;
    store.redis_url = proxy.redis_url();
    let app = TestApp::spawn_with(serve_config(store)).await;
    let mut apps = vec![app];
    for _ in 1..instances {
        apps.push(TestApp::spawn_with(apps[0].config.clone()).await);
    }
    let apps: Vec<&TestApp> = apps.iter().collect();
    let (app, stores) = (apps[0], &apps[0].state.stores);
    let users = create_users(stores, 200).await;
    let coupon = create_coupon(app, 100).await;
    assert_eq!(winners(&stampede(&apps, users[..40].iter().map(|user| (coupon, *user)).collect()).await).len(), 40);
    wait_persisted(app, coupon, 40).await;
    // Everything so far is on the replica: a write of this connection, then WAIT for the replica to have it.
    let to_master = connect(&master).await;
    let _: () = to_master.set("replicated", 1, None, None, false).await.unwrap();
    let acked: i64 = to_master.wait(1, 10_000).await.unwrap();
    assert_eq!(acked, 1);

    // The replica stops following its master here, holding what a replica that lagged would hold; it is
    // promoted now rather than after the master dies, so that nothing still in flight reaches it.
    promote(&to_replica).await;
    let lock = hold_rows(app.db(), coupon).await;
    issue_as_one_entry(stores, coupon, &users[40..70]).await;
    wait_for_lock_waits_at_least(app.db(), 1, "the writer holds the 30 inside its transaction").await;

    master.kill();
    proxy.repoint(replica.port);
    let issued_before_release = AtomicUsize::new(0);
    let release_once_the_checks_wait = async {
        // The writer on the held rows, each instance's check of the promoted replica on the writer's lock of
        // the coupon (another instance's writer may wait there too). A build that trusts the replica issues
        // instead: then the writer is let go at its first 201, and the counts below show what it did.
        let deadline = tokio::time::Instant::now() + NOTICE;
        while lock_waits(app.db()).await < 1 + instances as i64 && issued_before_release.load(Ordering::Acquire) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not within {NOTICE:?}: the checks wait for the writer");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        lock.commit().await.unwrap();
    };
    let asks = ask_until_decided(&apps, coupon, &users[70..], &issued_before_release);
    let (late, ()) = tokio::join!(asks, release_once_the_checks_wait);

    assert_eq!(winners(&late).len(), 30, "the promoted replica sold the stock of the batch the writer held");
    caught_up(app, coupon).await;
    let holders = rows_within_quantity(app.db(), coupon, 100).await;
    assert_eq!(holders.len(), 100);
    assert!(users[..70].iter().all(|user| holders.contains(user)), "an earlier winner lost its coupon");
    holders_are_refused_again(app, coupon, &holders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_a_lagging_replica_while_the_writer_holds_a_batch_never_exceeds_the_quantity() {
    failover_to_a_lagging_replica(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_a_lagging_replica_seen_by_two_instances_never_exceeds_the_quantity() {
    failover_to_a_lagging_replica(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_wait_replicas_a_201_is_on_the_replica_and_a_failover_loses_none() {
    let (mut master, replica, to_replica, proxy) = master_with_replica().await;
    let mut store = isolated_store().await;
    store.redis_url = proxy.redis_url();
    store.redis_wait_replicas = 1;
    let app = TestApp::spawn_with(serve_config(store)).await;
    let users = create_users(&app.state.stores, 120).await;
    let coupon = create_coupon(&app, 100).await;

    // A replica that acknowledges nothing: no issuance is answered 201.
    replica.freeze(true);
    for user in &users[..5] {
        let (status, body) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "user {user}: {body}");
    }
    replica.freeze(false);

    let asked = ask_until_decided(&[&app], coupon, &users[5..60], &AtomicUsize::new(0)).await;
    let acknowledged: HashSet<i64> = winners(&asked).into_iter().collect();
    assert_eq!(acknowledged.len(), 55);
    // Every 201 was on the replica when it was answered; the master dies before the writer persists more.
    let issued_key = format!("{}coupon:{{{coupon}}}:issued", app.state.stores.redis.keys.prefix());
    let on_replica: Vec<String> = to_replica.hkeys(&issued_key).await.unwrap();
    let on_replica: HashSet<i64> = on_replica.iter().map(|user| user.parse().unwrap()).collect();
    assert!(acknowledged.is_subset(&on_replica), "a 201 the replica did not have");
    master.kill();
    promote(&to_replica).await;
    proxy.repoint(replica.port);

    let again = ask_until_decided(&[&app], coupon, &users[5..60], &AtomicUsize::new(0)).await;
    assert!(again.iter().all(|(_, status)| *status == StatusCode::CONFLICT), "an acknowledged 201 was lost: {again:?}");
    // The promoted node has no replica to acknowledge new issuances until one is attached to it.
    let _new_replica = replica_of(replica.port).await;
    let late = ask_until_decided(&[&app], coupon, &users[60..], &AtomicUsize::new(0)).await;
    // The 5 answered 503 stand: Redis decided them, and the replica got them before the 55 acknowledged after.
    assert_eq!(on_replica.len(), 60);
    caught_up(&app, coupon).await;
    let holders = rows_within_quantity(app.db(), coupon, 100).await;
    assert!(acknowledged.is_subset(&holders));
    // The rest of the quantity went to new users: each told 201, or 503 when the new replica was slow to
    // acknowledge and then 409 (the issuance stood).
    let late_holders: HashSet<i64> = users[60..].iter().copied().filter(|user| holders.contains(user)).collect();
    assert_eq!(late_holders.len(), 40);
    assert!(winners(&late).iter().all(|user| late_holders.contains(user)));
    holders_are_refused_again(&app, coupon, &holders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_database_beside_an_earlier_sale_under_the_same_prefix_starts_clean() {
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let earlier = TestApp::spawn_with(serve_config(store.clone())).await;
    let old_users = create_users(&earlier.state.stores, 60).await;
    let old_coupon = create_coupon(&earlier, 100).await;
    let sold = stampede(&[&earlier], old_users[..50].iter().map(|user| (old_coupon, *user)).collect()).await;
    assert_eq!(winners(&sold).len(), 50);
    wait_persisted(&earlier, old_coupon, 50).await;
    earlier.stop().await;

    // A new, empty database; the same Redis and REDIS_PREFIX.
    let mut fresh = isolated_store().await;
    fresh.redis_url = store.redis_url.clone();
    fresh.redis_prefix = store.redis_prefix.clone();
    let app = TestApp::spawn_with(serve_config(fresh)).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 20).await;
    let coupon = create_coupon(&app, 10).await;
    assert_eq!(coupon, old_coupon, "the new database reuses the id");
    let body = crate::coupons::progress(&app, coupon).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(0), Some(10)), "{body}");
    // A user only the earlier database has is no user here.
    let stranger = old_users[50];
    assert!(!users.contains(&stranger));
    let (status, body) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": stranger })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "USER_NOT_FOUND");

    let asked = stampede(&[&app, &other], users.iter().map(|user| (coupon, *user)).collect()).await;
    assert_eq!(winners(&asked).len(), 10);
    wait_persisted(&app, coupon, 10).await;
    let holders = rows_within_quantity(app.db(), coupon, 10).await;
    assert_eq!(holders.len(), 10);
    assert!(holders.iter().all(|user| users.contains(user)));
    holders_are_refused_again(&app, coupon, &holders).await;
}

/// Which key of the coupon a test deletes, `meta` surviving unless it is the one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lost {
    Issued,
    Stock,
    Queue,
    Meta,
}

impl Lost {
    fn key(self, stores: &Stores, coupon: CouponId) -> String {
        let what = match self {
            Lost::Issued => "issued",
            Lost::Stock => "stock",
            Lost::Queue => "queue",
            Lost::Meta => "meta",
        };
        format!("{}coupon:{{{coupon}}}:{what}", stores.redis.keys.prefix())
    }
}

/// Quantity 50 on two instances of one database and Redis, writers driven by hand: 15 issued and persisted,
/// 20 more issued and still in the stream; one key deleted; the 35 holders ask again, then 60 new users
/// (half through each instance). Every holder is refused, exactly 15 new users win, and once the writer
/// has settled MySQL holds the 35 and the 15.
async fn one_key_lost(lost: Lost) {
    let app = App::build(serve_config(isolated_store().await)).await.expect("build app");
    let other = App::build(app.state().config.as_ref().clone()).await.expect("build app");
    let (state, other): (&AppState, &AppState) = (app.state(), other.state());
    let stores = &state.stores;
    let users = create_users(stores, 95).await;
    let coupon = campaign(state, 50).await;
    let mut writer = coupon::writer::Writer::new();
    script_issue(stores, coupon, &users[..15]).await;
    while writer.drain_once(stores).await.unwrap() != coupon::writer::Outcome::Idle {}
    script_issue(stores, coupon, &users[15..35]).await;

    let _: i64 = stores.redis.client().del(lost.key(stores, coupon)).await.unwrap();
    let ask = |user: i64, n: usize| {
        let state = if n.is_multiple_of(2) { state } else { other };
        async move { (user, state.coupons.issue(coupon, UserId::new(user).unwrap()).await) }
    };
    let again = futures::future::join_all(users[..35].iter().enumerate().map(|(n, user)| ask(*user, n))).await;
    for (user, outcome) in &again {
        assert!(matches!(outcome, Err(coupon::Error::AlreadyIssued { .. })), "{lost:?}: holder {user} got {outcome:?}");
    }
    let late = futures::future::join_all(users[35..].iter().enumerate().map(|(n, user)| ask(*user, n))).await;
    let late_winners: HashSet<i64> =
        late.iter().filter(|(_, outcome)| outcome.is_ok()).map(|(user, _)| *user).collect();
    assert_eq!(late_winners.len(), 15, "{lost:?}");
    for (user, outcome) in &late {
        assert!(outcome.is_ok() || matches!(outcome, Err(coupon::Error::SoldOut(_))), "{lost:?}: {user} {outcome:?}");
    }

    while writer.drain_once(stores).await.unwrap() != coupon::writer::Outcome::Idle {}
    let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon.get())
        .fetch_all(&stores.db)
        .await
        .unwrap();
    let holders: HashSet<i64> = rows.iter().copied().collect();
    assert_eq!((rows.len(), holders.len()), (50, 50), "{lost:?}");
    let expected: HashSet<i64> = users[..35].iter().copied().chain(late_winners).collect();
    assert_eq!(holders, expected, "{lost:?}");
    let (issued, remaining) = coupon::cache::counts(&stores.redis, coupon).await.unwrap();
    assert_eq!((issued, remaining), (50, 0), "{lost:?}");
}

#[tokio::test]
async fn the_dedupe_hash_deleted_mid_sale_never_issues_a_holder_twice() {
    one_key_lost(Lost::Issued).await;
}

#[tokio::test]
async fn the_stock_counter_deleted_mid_sale_is_rebuilt_and_the_sale_sells_out() {
    one_key_lost(Lost::Stock).await;
}

#[tokio::test]
async fn the_stream_deleted_with_entries_unread_loses_none_of_their_winners() {
    one_key_lost(Lost::Queue).await;
}

#[tokio::test]
async fn meta_deleted_with_entries_unread_keeps_their_winners_first_come_first_served() {
    one_key_lost(Lost::Meta).await;
}

#[tokio::test]
async fn serve_refuses_a_redis_that_evicts_keys_and_names_the_setting() {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let refused = App::build(serve_config(store)).await.err().expect("serve started on an evicting Redis");
    let message = refused.to_string();
    assert!(message.contains("maxmemory-policy allkeys-lru") && message.contains("noeviction"), "{message}");
}
