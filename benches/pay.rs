//! Times the pay transaction (`Orders::pay` of a PENDING order: the lock-free checks, then the one MySQL
//! transaction) against the dev services. Orders are created, and the balance topped up, outside the timed
//! part. `DATABASE_URL` / `REDIS_URL` default to the dev services (`scripts/services.sh start dev`).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stampede::balance::{Balances, Limits};
use stampede::config::StoreConfig;
use stampede::id::{ProductId, UserId};
use stampede::order::{self, ItemRequest, NewOrder, Orders};
use stampede::product::{Catalog, ProductSpec};
use stampede::store::Stores;
use stampede::user::{self, UserName};
use tokio::runtime::Runtime;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn connect() -> Stores {
    let config = StoreConfig {
        database_url: env_or("DATABASE_URL", "mysql://stampede:stampede@127.0.0.1:3390/stampede"),
        redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6390"),
        redis_prefix: "stampede-bench:".to_owned(),
        database_pool_size: 4,
        redis_pool_size: 1,
        redis_wait_replicas: 0,
    };
    Stores::connect(&config).await.expect("dev services up (scripts/services.sh start dev)")
}

/// A buyer and `products` products of price 1 with all the stock a bench run can use.
async fn fixtures(stores: &Stores, catalog: &Catalog, products: usize) -> (UserId, Vec<ProductId>) {
    let user = user::create(stores, UserName::parse("bench buyer").unwrap()).await.unwrap().id;
    let mut ids = Vec::new();
    for n in 0..products {
        let new = ProductSpec::single(&format!("bench product {n}"), 1, i64::from(i32::MAX)).validate().unwrap();
        ids.push(catalog.create(new).await.unwrap().id);
    }
    (user, ids)
}

/// Makes `count` PENDING orders of one unit of each product, with the balance to pay them all.
async fn pending_orders(
    stores: &Stores,
    orders: &Orders,
    user: UserId,
    products: &[ProductId],
    count: u64,
) -> Vec<order::Order> {
    let limits = Limits::default();
    let balances = Balances::new(stores.clone(), limits);
    let needed = count as i64 * products.len() as i64;
    while balances.get(user).await.unwrap().balance < needed {
        balances.charge(user, limits.charge_max, None).await.unwrap();
    }
    let items: Vec<ItemRequest> =
        products.iter().map(|&product_id| ItemRequest { product_id, option_id: None, quantity: 1 }).collect();
    let mut pending = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let new = NewOrder { user_id: user, items: items.clone(), coupon_id: None };
        pending.push(orders.create(new, false).await.unwrap());
    }
    pending
}

fn bench_pay(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let stores = runtime.block_on(connect());
    let catalog = runtime.block_on(async { Catalog::new(stores.clone()) });
    let orders = Orders::new(stores.clone(), catalog.clone());
    let mut group = c.benchmark_group("pay");
    for products in [1, 3] {
        let (user, ids) = runtime.block_on(fixtures(&stores, &catalog, products));
        group.bench_function(format!("{products}_item_order"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (stores, orders) = (stores.clone(), orders.clone());
                let ids = ids.clone();
                async move {
                    let pending = pending_orders(&stores, &orders, user, &ids, iters).await;
                    let mut timed = Duration::ZERO;
                    for order in pending {
                        let started = Instant::now();
                        let paid = orders.pay(user, order.order_id).await.unwrap();
                        timed += started.elapsed();
                        std::hint::black_box(paid);
                    }
                    timed
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pay);
criterion_main!(benches);
