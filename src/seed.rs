//! `stampede seed`: bulk test data for load tests, in large multi-row INSERTs on a few connections at once.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;

use crate::config::SeedConfig;
use crate::id::{CouponId, UserId};
use crate::store::{StoreError, Stores};
use crate::{coupon, product, user};

/// INSERT statements in flight at once; more only queues on InnoDB's auto-increment lock.
const PARALLEL_BATCHES: usize = 4;

/// What a seed run made.
#[derive(Debug, Default)]
pub struct Seeded {
    pub first_user: Option<UserId>,
    pub last_user: Option<UserId>,
    pub products: u64,
    pub coupons: Vec<CouponId>,
}

/// Migrates, then inserts the requested users, products and coupons, showing progress on stderr.
pub async fn run(config: &SeedConfig) -> Result<Seeded, coupon::Error> {
    let stores = Stores::connect(&config.store).await?;
    let batch = config.batch_size.max(1) as u64;
    let mut seeded = Seeded::default();

    let started = Instant::now();
    let bar = progress(config.users, "users");
    let ids: Vec<Vec<UserId>> = stream::iter(batches(config.users, batch))
        .map(|(from, count)| {
            let (stores, bar) = (&stores, &bar);
            async move {
                let names: Vec<String> = (from..from + count).map(|n| format!("user-{n}")).collect();
                let ids = user::db::insert_batch(&stores.db, &names).await?;
                user::cache::remember(&stores.redis, &ids).await?;
                bar.inc(count);
                Ok::<_, StoreError>(ids)
            }
        })
        .buffer_unordered(PARALLEL_BATCHES)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    seeded.first_user = ids.iter().flatten().min().copied();
    seeded.last_user = ids.iter().flatten().max().copied();
    report("users", config.users, started);

    let started = Instant::now();
    let bar = progress(config.products, "products");
    let counts: Vec<u64> = stream::iter(batches(config.products, batch))
        .map(|(from, count)| {
            let (stores, bar) = (&stores, &bar);
            async move {
                let products: Vec<product::NewProduct> = {
                    let mut rng = rand::rng();
                    (from..from + count)
                        .map(|n| seed_product(n, rng.random_range(10..=1000) * 100, config.options_per_product))
                        .collect()
                };
                let inserted = product::db::insert_batch(&stores.db, &products).await?;
                bar.inc(count);
                Ok::<_, StoreError>(inserted)
            }
        })
        .buffer_unordered(PARALLEL_BATCHES)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    seeded.products = counts.iter().sum();
    report("products", config.products, started);

    // Through the domain, so each coupon's Redis state is loaded as on the admin endpoint.
    let coupons = coupon::Coupons::start(stores.clone(), coupon::Catalog::default(), Default::default());
    for n in 0..config.coupons {
        let name = format!("coupon-{n}");
        let spec = coupon::CouponSpec::open_ended(&name, coupon::DiscountType::Fixed, 1_000, config.coupon_quantity);
        seeded.coupons.push(coupons.create(coupon::NewCoupon::parse(spec, chrono::Utc::now())?).await?.id);
    }
    Ok(seeded)
}

/// Product `n`, sold in `options` options of 1,000 units each.
fn seed_product(n: u64, price: i64, options: u64) -> product::NewProduct {
    let option = |name: String| product::OptionSpec { name, price: None, stock: 1_000 };
    let options = if options == 1 {
        vec![option(product::DEFAULT_OPTION.to_owned())]
    } else {
        (1..=options).map(|k| option(format!("option-{k}"))).collect()
    };
    let spec = product::ProductSpec { name: format!("product-{n}"), price, stock: None, options: Some(options) };
    spec.validate().expect("seed products are valid")
}

/// `(first index, count)` of each batch covering `0..total`.
fn batches(total: u64, size: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..total).step_by(size as usize).map(move |from| (from, size.min(total - from)))
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!("{what:>8} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    bar
}

fn report(what: &str, count: u64, started: Instant) {
    if count > 0 {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{count} {what} in {secs:.1} s ({:.0}/s)", count as f64 / secs);
    }
}
