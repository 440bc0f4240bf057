//! Redis Cluster, on clusters of the tests' own (a shared cluster's slots and nodes are every test's): a
//! coupon's slot moved to another master in the middle of its sale, and a master killed mid-sale and started
//! again. The rest of the Redis-touching suite runs on a shared cluster too when `TEST_REDIS_URL` names one
//! (`make test` does).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

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
    assert_eq!(holders(&app, coupon).await, won);
    assert_eq!(progress(&other, coupon).await["persisted"], quantity);
    // The apps before the cluster, so that no job logs the cluster going away.
    other.stop().await;
    app.stop().await;
    drop(cluster);
}

/// Persistence and coverage of the cluster of the node-down test: every write is in the AOF before Redis
/// answers it, so a killed node comes back with every issuance it acknowledged; and the masters still
/// up keep serving their own slots once they have marked the dead one failed (by default a cluster missing
/// a slot refuses every command, docs/scaling.md#a-master-down).
const DURABLE_PARTIAL_COVERAGE: [&str; 6] =
    ["--appendonly", "yes", "--appendfsync", "always", "--cluster-require-full-coverage", "no"];
/// The contract's bound on a 503: "answered within 2 s" (API.md, errors).
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(2);
/// How long a user keeps asking again after a 503 once the node is back, before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// One issue request: the user, the status, whether a 503 carried `Retry-After`, and the time to answer.
struct Asked {
    user: i64,
    status: StatusCode,
    retry_after: bool,
    elapsed: Duration,
}

async fn ask(app: &TestApp, coupon: i64, user: i64) -> Asked {
    let started = Instant::now();
    let response = app
        .http
        .post(app.url(&format!("/api/v1/coupons/{coupon}/issue")))
        .bearer_auth(crate::support::token_for(user))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .expect("request reaches the app");
    let elapsed = started.elapsed();
    let (status, retry_after) = (response.status(), response.headers().contains_key("retry-after"));
    let body = response.text().await.unwrap();
    assert!(
        [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::GONE, StatusCode::SERVICE_UNAVAILABLE]
            .contains(&status),
        "coupon {coupon}, user {user}: {status} {body}"
    );
    Asked { user, status, retry_after, elapsed }
}

/// Every `(coupon, user)` asked once, [`IN_FLIGHT`] at a time, alternating between the two apps.
async fn ask_all(apps: [&TestApp; 2], asks: Vec<(i64, i64)>) -> Vec<(i64, Asked)> {
    stream::iter(asks.into_iter().enumerate())
        .map(|(n, (coupon, user))| async move { (coupon, ask(apps[n % 2], coupon, user).await) })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// Asks until the answer is not a 503, for at most [`RETRY_FOR`].
async fn ask_until_answered(app: &TestApp, coupon: i64, user: i64) -> Asked {
    let started = Instant::now();
    loop {
        let asked = ask(app, coupon, user).await;
        if asked.status != StatusCode::SERVICE_UNAVAILABLE {
            return asked;
        }
        assert!(started.elapsed() < RETRY_FOR, "user {user} still gets 503 for coupon {coupon} after {RETRY_FOR:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each user asks [`ask_until_answered`], [`IN_FLIGHT`] at a time, alternating between the two apps.
async fn ask_each_until_answered(apps: [&TestApp; 2], coupon: i64, users: &[i64]) -> Vec<Asked> {
    stream::iter(users.iter().enumerate())
        .map(|(n, &user)| ask_until_answered(apps[n % 2], coupon, user))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// The users holding `coupon` in MySQL.
async fn holders(app: &TestApp, coupon: i64) -> HashSet<i64> {
    let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_all(app.db())
        .await
        .unwrap();
    let holders: HashSet<i64> = rows.iter().copied().collect();
    assert_eq!(holders.len(), rows.len(), "a user holds coupon {coupon} twice");
    holders
}

/// The index in `cluster.nodes` of the master serving `coupon`'s keys.
fn master_of(cluster: &RedisCluster, app: &TestApp, coupon: i64) -> usize {
    let meta = format!("{}coupon:{{{coupon}}}:meta", app.state.stores.redis.keys.prefix());
    let slot: u16 = cluster.cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", &meta]).parse().unwrap();
    let port = masters(cluster)
        .into_iter()
        .find(|node| node.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .expect("every slot has a master")
        .port;
    cluster.nodes.iter().position(|node| node.port == port).unwrap()
}

/// Two coupons on two masters, each sold to 200 users; the first coupon's master is killed (its port then
/// refuses connections) and 300 users ask for each coupon; the master starts again on its data, every user
/// who got a 503 asks again, and fresh users buy the first coupon until it sells out. Checks on the way
/// that the dead master's coupon answered 503 with Retry-After within the contract's 2 s while the other
/// coupon kept selling (a 201 for each ask), and at the end that both coupons issued exactly once to each
/// winner, as MySQL and the admin progress say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_answers_503_for_its_coupon_while_another_keeps_selling_and_the_sale_ends_exact() {
    let mut cluster = RedisCluster::start_with(&DURABLE_PARTIAL_COVERAGE);
    let mut store = isolated_store().await;
    store.redis_url = cluster.url();
    let app = TestApp::spawn_with(serve_config(store)).await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let apps = [&app, &other];
    let users = create_users(&app.state.stores, 2_000).await;
    // `down` sells out after the restart; `up` never sells out here, so each of its asks can win.
    let (down_quantity, up_quantity) = (1_000, 5_000);
    let down = create_coupon(&app, down_quantity).await;
    let down_node = master_of(&cluster, &app, down);
    let mut up = create_coupon(&app, up_quantity).await;
    while master_of(&cluster, &app, up) == down_node {
        up = create_coupon(&app, up_quantity).await;
    }

    let before: Vec<(i64, i64)> =
        users[..200].iter().map(|&u| (down, u)).chain(users[200..400].iter().map(|&u| (up, u))).collect();
    let before = ask_all(apps, before).await;
    assert!(before.iter().all(|(_, asked)| asked.status == StatusCode::CREATED), "a 201 for every first ask");

    cluster.kill(down_node);
    let during: Vec<(i64, i64)> =
        users[400..700].iter().map(|&u| (down, u)).chain(users[700..1_000].iter().map(|&u| (up, u))).collect();
    let during = ask_all(apps, during).await;
    let (mut down_during, mut healthy_during) = (Vec::new(), Vec::new());
    for (coupon, asked) in during {
        if coupon == down { down_during.push(asked) } else { healthy_during.push(asked) }
    }
    eprintln!(
        "master down: coupon {down} slowest 503 {:?}; coupon {up} {} 201s of {}",
        down_during.iter().map(|asked| asked.elapsed).max().unwrap(),
        healthy_during.iter().filter(|asked| asked.status == StatusCode::CREATED).count(),
        healthy_during.len()
    );
    for asked in &down_during {
        assert_eq!(asked.status, StatusCode::SERVICE_UNAVAILABLE, "user {} of the dead master's coupon", asked.user);
        assert!(asked.retry_after, "a 503 without Retry-After");
        assert!(asked.elapsed <= UNAVAILABLE_WITHIN, "a 503 after {:?}", asked.elapsed);
    }
    let sold = healthy_during.iter().filter(|asked| asked.status == StatusCode::CREATED).count();
    assert_eq!(sold, healthy_during.len(), "201s for the healthy master's coupon while the other was down");

    // Back on the same data. A user who got a 503 asks again: 201, or 409 when the first ask had been
    // applied after all and only its answer was lost.
    cluster.restart(down_node);
    cluster.wait_until_ok();
    let unanswered = |coupon_asks: &[Asked]| -> Vec<i64> {
        coupon_asks.iter().filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE).map(|a| a.user).collect()
    };
    let down_again = unanswered(&down_during);
    let up_again = unanswered(&healthy_during);
    for (coupon, users) in [(down, &down_again), (up, &up_again)] {
        let again = ask_each_until_answered(apps, coupon, users).await;
        assert!(again.iter().all(|asked| [StatusCode::CREATED, StatusCode::CONFLICT].contains(&asked.status)));
    }
    let fresh = ask_each_until_answered(apps, down, &users[1_000..]).await;
    assert!(fresh.iter().all(|asked| [StatusCode::CREATED, StatusCode::GONE].contains(&asked.status)));
    let fresh_won = fresh.iter().filter(|asked| asked.status == StatusCode::CREATED).map(|asked| asked.user);

    let down_won: HashSet<i64> = users[..200].iter().chain(&users[400..700]).copied().chain(fresh_won).collect();
    assert_eq!(down_won.len() as i64, down_quantity, "winners of coupon {down}");
    let body = wait_persisted(&app, down, down_quantity).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(down_quantity), Some(0)), "{body}");
    assert_eq!(holders(&app, down).await, down_won);
    let up_won: HashSet<i64> = users[200..400].iter().chain(&users[700..1_000]).copied().collect();
    let body = wait_persisted(&other, up, 500).await;
    assert_eq!(body["issued"], 500, "{body}");
    assert_eq!(holders(&app, up).await, up_won);
    other.stop().await;
    app.stop().await;
    drop(cluster);
}
