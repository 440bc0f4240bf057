//! What the scenarios need on the server before the first virtual user starts, created through the
//! admin API by goose's `test_start` transaction: catalog products, the flash-sale coupon and its
//! pool of users, checkout buyers holding a coupon, the hot product.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt, stream};

use crate::api::{Api, Error, Product};
use crate::settings::Settings;

/// Discount of the checkout coupon, in won; every catalog price is at least this.
pub const CHECKOUT_DISCOUNT: i64 = 1_000;
/// Stock of each option of a catalog product: enough that ordinary checkout never sells out.
const CATALOG_STOCK: u64 = 1_000_000;
/// Price of the hot product, in won.
const HOT_PRICE: i64 = 10_000;

/// Which parts of the fixture the active scenarios use; only those are created.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub catalog: bool,
    pub flash_sale: bool,
    pub checkout: bool,
    pub hot_product: bool,
}

/// Everything set-up created, shared read-only by every virtual user.
pub struct Fixture {
    /// The server's API, for verification after the run.
    pub api: Api,
    pub catalog: Vec<Product>,
    pub flash_sale: Option<FlashSale>,
    pub checkout: Option<Checkout>,
}

/// The flash-sale coupon and the users who may ask for it.
pub struct FlashSale {
    pub coupon_id: i64,
    pub quantity: u64,
    /// Each id is handed out once: a user asks once (winners may repeat, see `flash_sale`).
    pub users: Pool,
}

/// Buyers for the checkout scenarios.
pub struct Checkout {
    /// A FIXED coupon of [`CHECKOUT_DISCOUNT`] won, issued to every buyer during set-up.
    pub coupon_id: i64,
    /// Handed out round-robin; a buyer's first order uses its coupon, later ones go without.
    pub buyers: Pool,
    /// The product whose first option every `checkout-hot` buyer wants, as created (its initial stock).
    pub hot_product: Option<Product>,
}

/// Users handed out by a shared counter, so no two virtual users get the same one.
pub struct Pool {
    members: Vec<Member>,
    next: AtomicUsize,
}

/// A user the load test acts for, with its own token.
pub struct Member {
    pub id: i64,
    /// `Authorization: Bearer` of every request made for this user.
    pub token: String,
}

impl Pool {
    /// The users of `ids`, each with a token signed with `secret`.
    fn new(ids: Vec<i64>, secret: &str) -> Self {
        let members = ids.into_iter().map(|id| Member { id, token: crate::token::mint(secret, id) }).collect();
        Self { members, next: AtomicUsize::new(0) }
    }

    /// The next user never handed out before, or `None` once all were.
    pub fn take(&self) -> Option<&Member> {
        self.members.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The next user round-robin, and whether this is the first time it is handed out.
    pub fn take_cycling(&self) -> (&Member, bool) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (&self.members[n % self.members.len()], n < self.members.len())
    }
}

/// Creates what `needs` asks for, `settings.setup_concurrency` admin requests at a time.
pub async fn set_up(api: Api, settings: &Settings, needs: Needs) -> Result<Fixture, Error> {
    // Names carry the start time so runs against one database are told apart in the data.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let limit = settings.setup_concurrency;

    let catalog = if needs.catalog {
        timed(&format!("{} catalog products", settings.catalog_products), async {
            concurrently(settings.catalog_products, limit, |i| {
                // 1,000 to 50,000 won, spread over the catalog.
                let price = CHECKOUT_DISCOUNT * (1 + (i as i64 * 7) % 50);
                let api = &api;
                let options: Vec<(String, u64)> =
                    (1..=settings.options_per_product).map(|k| (format!("size {k}"), CATALOG_STOCK)).collect();
                async move { api.create_product(&format!("loadtest {run} product {i}"), price, &options).await }
            })
            .await
        })
        .await?
    } else {
        Vec::new()
    };

    let flash_sale = if needs.flash_sale {
        let quantity = settings.flash_quantity;
        let coupon_id = api.create_coupon(&format!("loadtest {run} flash sale"), CHECKOUT_DISCOUNT, quantity).await?;
        let users = create_users(&api, settings.flash_users, limit, &format!("{run} flash")).await?;
        println!("set-up: flash-sale coupon {coupon_id}, quantity {quantity}, {} users", users.len());
        Some(FlashSale { coupon_id, quantity, users: Pool::new(users, &settings.jwt_secret) })
    } else {
        None
    };

    let checkout = if needs.checkout {
        let count = settings.checkout_users;
        let coupon_id = api.create_coupon(&format!("loadtest {run} checkout"), CHECKOUT_DISCOUNT, count as u64).await?;
        let buyers = create_users(&api, count, limit, &format!("{run} buyer")).await?;
        timed(&format!("checkout coupon {coupon_id} issued to {count} buyers"), async {
            stream::iter(buyers.iter().copied())
                .map(|user| api.issue(coupon_id, user))
                .buffer_unordered(limit)
                .try_collect::<()>()
                .await
        })
        .await?;
        let hot_product = if needs.hot_product {
            // Buyers want the first option; the second one shares the product and must stay untouched.
            let options = [("hot".to_owned(), settings.hot_stock), ("other".to_owned(), settings.hot_stock)];
            let product = api.create_product(&format!("loadtest {run} hot product"), HOT_PRICE, &options).await?;
            println!(
                "set-up: hot option {} of product {} with {} units",
                product.options[0].id, product.id, settings.hot_stock
            );
            Some(product)
        } else {
            None
        };
        Some(Checkout { coupon_id, buyers: Pool::new(buyers, &settings.jwt_secret), hot_product })
    } else {
        None
    };

    Ok(Fixture { api, catalog, flash_sale, checkout })
}

async fn create_users(api: &Api, count: usize, limit: usize, name: &str) -> Result<Vec<i64>, Error> {
    timed(&format!("{count} users ({name})"), async {
        concurrently(count, limit, |i| async move { api.create_user(&format!("{name} {i}")).await }).await
    })
    .await
}

/// Runs `make(0..count)` with at most `limit` in flight; results in index order, the first error wins.
pub async fn concurrently<T, F, Fut>(count: usize, limit: usize, make: F) -> Result<Vec<T>, Error>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    stream::iter(0..count).map(make).buffered(limit).try_collect().await
}

async fn timed<T>(what: &str, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let started = Instant::now();
    let result = work.await.map_err(|e| format!("creating {what}: {e}"))?;
    println!("set-up: {what} in {:.1}s", started.elapsed().as_secs_f64());
    Ok(result)
}
