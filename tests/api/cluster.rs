//! Redis Cluster: a coupon's slot moved to another master in the middle of its sale, on a cluster of the
//! test's own (a shared cluster's slots are every test's). The rest of the Redis-touching suite runs on a
//! shared cluster too when `TEST_REDIS_URL` names one (`make test` does).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use futures::{StreamExt, future, stream};
use reqwest::StatusCode;
use serde_json::json;

use crate::coupons::{create_coupon, create_users, progress, wait_persisted};
use crate::support::{RedisCluster, TestApp, isolated_store, serve_config};

/// Pause after each batch of keys moved: keeps the slot open long enough for issue requests to meet it so.
const KEY_PAUSE: Duration = Duration::from_millis(30);
/// Keys per MIGRATE, as `redis-cli --cluster reshard` moves them by default.
const MIGRATE_BATCH: usize = 10;
/// Issue requests in flight at once.
const IN_FLIGHT: usize = 200;
/// Responses received before the slot starts moving.
const BEFORE_MOVE: usize = 300;
/// Upper bound on the requests of the sale, so a sale that never sells out fails instead of running on.
const MAX_REQUESTS: usize = 100_000;

/// One master as `CLUSTER NODES` describes it.
struct Node {
    id: String,
    port: u16,
    /// Inclusive slot ranges it serves.
    slots: Vec<(u16, u16)>,
}

fn masters(cluster: &RedisCluster) -> Vec<Node> {
    let listing = cluster.cli(cluster.nodes[0].port, &["CLUSTER", "NODES"]);
    listing
        .lines()
        .map(|line| {
            // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot> <slot> ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .map(|range| match range.split_once('-') {
                    Some((first, last)) => (first.parse().unwrap(), last.parse().unwrap()),
                    None => (range.parse().unwrap(), range.parse().unwrap()),
                })
                .collect();
            Node { id: fields[0].to_owned(), port, slots }
        })
        .collect()
}

/// Moves `slot` from `from` to `to` as `redis-cli --cluster reshard` moves a slot: IMPORTING on the target,
/// MIGRATING on the source, MIGRATE of its keys in batches of [`MIGRATE_BATCH`] (reshard's default
/// `--cluster-pipeline`), then the new owner announced to every master, target first. [`KEY_PAUSE`] after each
/// batch holds the slot open, so requests meet ASK redirects. Returns the number of keys moved.
fn move_slot(cluster: &RedisCluster, slot: u16, from: &Node, to: &Node, all: &[Node]) -> usize {
    let slot = slot.to_string();
    let to_port = to.port.to_string();
    cluster.cli(to.port, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from.id]);
    cluster.cli(from.port, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to.id]);
    let mut moved = 0;
    loop {
        let batch = cluster.cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &slot, &MIGRATE_BATCH.to_string()]);
        let keys: Vec<&str> = batch.lines().filter(|key| !key.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
        migrate.extend(&keys);
        cluster.cli(from.port, &migrate);
        moved += keys.len();
        std::thread::sleep(KEY_PAUSE);
    }
    for node in std::iter::once(to).chain(all.iter().filter(|node| node.id != to.id)) {
        cluster.cli(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to.id]);
    }
    moved
}

/// When a response arrived, relative to the slot's move.
const BEFORE: u8 = 0;
const MOVING: u8 = 1;
const MOVED: u8 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_coupons_slot_to_another_master_mid_sale_issues_exactly_the_quantity_once_each() {
    let cluster = RedisCluster::start();
    let mut store = isolated_store().await;
    store.redis_url = cluster.url();
    let app = TestApp::spawn_with(serve_config(store)).await;
    // Two instances, so two writers in the consumer group read the stream while it moves.
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 3_000).await;
    let quantity = 2_000;
    let coupon = create_coupon(&app, quantity).await;

    let meta = format!("{}coupon:{{{coupon}}}:meta", app.state.stores.redis.keys.prefix());
    let slot: u16 = cluster.cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", &meta]).parse().unwrap();
    let nodes = masters(&cluster);
    let from = nodes.iter().position(|node| node.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))).unwrap();
    let to = (from + 1) % nodes.len();

    // The move starts once BEFORE_MOVE responses have come back, in a thread of its own (redis-cli blocks).
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let sold_out = Arc::new(AtomicBool::new(false));
    let (start_move, move_started) = tokio::sync::oneshot::channel::<()>();
    let mover = {
        let phase = phase.clone();
        tokio::spawn(async move {
            move_started.await.unwrap();
            phase.store(MOVING, Ordering::SeqCst);
            let moved = tokio::task::spawn_blocking(move || {
                let moved = move_slot(&cluster, slot, &nodes[from], &nodes[to], &nodes);
                let on_target = cluster.cli(nodes[to].port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
                let on_source = cluster.cli(nodes[from].port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
                (moved, on_target, on_source, cluster)
            })
            .await
            .unwrap();
            phase.store(MOVED, Ordering::SeqCst);
            moved
        })
    };

    // Every user asks in turn, round after round, until the slot has moved and the coupon is sold out.
    let mut start_move = Some(start_move);
    let mut results: Vec<(i64, StatusCode, u8)> = Vec::new();
    {
        let requests = stream::iter(0..MAX_REQUESTS)
            .take_while(|_| future::ready(!(phase.load(Ordering::SeqCst) == MOVED && sold_out.load(Ordering::SeqCst))))
            .map(|n| {
                let (app, user) = (if n % 2 == 0 { &app } else { &other }, users[n % users.len()]);
                let (phase, sold_out) = (phase.clone(), sold_out.clone());
                async move {
                    let (status, body) =
                        app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
                    assert!(
                        [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::GONE, StatusCode::SERVICE_UNAVAILABLE]
                            .contains(&status),
                        "{status} {body}"
                    );
                    if status == StatusCode::GONE {
                        sold_out.store(true, Ordering::SeqCst);
                    }
                    (user, status, phase.load(Ordering::SeqCst))
                }
            })
            .buffer_unordered(IN_FLIGHT);
        let mut requests = std::pin::pin!(requests);
        while let Some(result) = requests.next().await {
            results.push(result);
            if results.len() == BEFORE_MOVE
                && let Some(start) = start_move.take()
            {
                start.send(()).unwrap();
            }
        }
    }
    let (moved, on_target, on_source, cluster) = mover.await.unwrap();

    let created = |when: u8| results.iter().filter(|(_, s, p)| *s == StatusCode::CREATED && *p == when).count();
    let unavailable = results.iter().filter(|(_, s, _)| *s == StatusCode::SERVICE_UNAVAILABLE).count();
    eprintln!(
        "slot {slot}: {moved} keys moved; 201s before the move {}, while moving {}, after {}; 503s {unavailable}; \
         {} requests",
        created(BEFORE),
        created(MOVING),
        created(MOVED),
        results.len()
    );
    assert!(moved >= 4, "the coupon's meta, stock, issued and queue moved, and only {moved} keys did");
    assert_eq!((on_source.as_str(), on_target.parse::<usize>().unwrap()), ("0", moved), "the slot moved whole");
    assert!(created(BEFORE) > 0 && created(MOVED) > 0, "the sale did not span the move");

    let won: Vec<i64> = results.iter().filter(|(_, s, _)| *s == StatusCode::CREATED).map(|(u, _, _)| *u).collect();
    assert_eq!(won.len() as i64, quantity, "201s");
    let won: HashSet<i64> = won.into_iter().collect();
    assert_eq!(won.len() as i64, quantity, "a user won twice");
    let body = wait_persisted(&app, coupon, quantity).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(quantity), Some(0)), "{body}");
    let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_all(app.db())
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, quantity);
    assert_eq!(rows.into_iter().collect::<HashSet<_>>(), won);
    assert_eq!(progress(&other, coupon).await["persisted"], quantity);
    // The apps before the cluster, so that no job logs the cluster going away.
    other.stop().await;
    app.stop().await;
    drop(cluster);
}
