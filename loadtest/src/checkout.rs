//! Buyers: charge the balance, order one unit (with the checkout coupon on a buyer's first order), pay.
//! `checkout` buys across the catalog; `checkout-hot` has every buyer after one product with
//! `HOT_STOCK` units, so payments contend on one stock row and the product sells out mid-run.
//!
//! After the run, [`verify_hot`] checks the hot product's stock against the payments the buyers saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use goose::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::api::{Api, Product};
use crate::report::Checks;
use crate::request::{self, Answer, CHARGE, CREATE_ORDER, PAY};

/// Which product a buyer wants.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    /// A random catalog product.
    Catalog,
    /// The one hot product.
    Hot,
}

/// What the buyers of one variant saw.
#[derive(Default)]
pub struct Counters {
    orders: AtomicU64,
    paid: AtomicU64,
    /// 409 OUT_OF_STOCK, on create or on pay: the right answer once the stock is gone.
    out_of_stock: AtomicU64,
    /// Pays with no response or a 5xx: committed or not, nobody knows.
    pay_unknown: AtomicU64,
}

/// Counters of both variants.
#[derive(Default)]
pub struct Stats {
    catalog: Counters,
    hot: Counters,
}

impl Stats {
    fn of(&self, variant: Variant) -> &Counters {
        match variant {
            Variant::Catalog => &self.catalog,
            Variant::Hot => &self.hot,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedOrder {
    order_id: i64,
}

/// The scenario's one transaction: charge, create the order, pay it.
pub async fn buy(user: &mut GooseUser, shared: Arc<Shared>, variant: Variant) -> TransactionResult {
    let fixture = shared.fixture()?;
    let checkout = fixture.checkout.as_ref().ok_or_else(|| crate::missing("checkout"))?;
    let product = match variant {
        Variant::Hot => checkout.hot_product.ok_or_else(|| crate::missing("hot product"))?,
        Variant::Catalog => fixture.catalog[rand::random_range(0..fixture.catalog.len())],
    };
    let counters = shared.checkout.of(variant);
    let (buyer, first_order) = checkout.buyers.take_cycling();

    let path = format!("/api/v1/users/{buyer}/balance/charge");
    let charged = request::post(user, &path, &json!({ "amount": product.price })).await?;
    request::record(user, CHARGE, &charged, charged.expect(&[200])).await?;

    let mut order = json!({ "userId": buyer, "items": [{ "productId": product.id, "quantity": 1 }] });
    if first_order {
        order["couponId"] = json!(checkout.coupon_id);
    }
    let created = request::post(user, "/api/v1/orders", &order).await?;
    if is_out_of_stock(&created) {
        counters.out_of_stock.fetch_add(1, Ordering::Relaxed);
        return request::record(user, CREATE_ORDER, &created, Ok(())).await;
    }
    let CreatedOrder { order_id } = match created.expect(&[201]).and_then(|()| created.json()) {
        Ok(order) => order,
        Err(why) => return request::record(user, CREATE_ORDER, &created, Err(why)).await,
    };
    request::record(user, CREATE_ORDER, &created, Ok(())).await?;
    counters.orders.fetch_add(1, Ordering::Relaxed);

    let path = format!("/api/v1/orders/{order_id}/pay");
    let paid = request::post(user, &path, &json!({ "userId": buyer })).await?;
    match paid.status {
        Some(200) => counters.paid.fetch_add(1, Ordering::Relaxed),
        _ if is_out_of_stock(&paid) => counters.out_of_stock.fetch_add(1, Ordering::Relaxed),
        // A 4xx changed nothing (pay is all or nothing); without an answer or with a 5xx, it may have.
        Some(status) if status < 500 => 0,
        _ => counters.pay_unknown.fetch_add(1, Ordering::Relaxed),
    };
    let verdict = if is_out_of_stock(&paid) { Ok(()) } else { paid.expect(&[200]) };
    request::record(user, PAY, &paid, verdict).await
}

/// 409 OUT_OF_STOCK: the right answer once the stock is gone (any other 409 is a failure).
fn is_out_of_stock(answer: &Answer) -> bool {
    answer.status == Some(409) && answer.error_code().as_deref() == Some("OUT_OF_STOCK")
}

/// Prints what the buyers saw; for the hot product also checks stock against payments.
pub async fn verify(api: &Api, hot_product: Option<Product>, stats: &Stats) -> bool {
    for (name, counters) in [("checkout", &stats.catalog), ("checkout-hot", &stats.hot)] {
        let orders = counters.orders.load(Ordering::Relaxed);
        if orders > 0 || counters.out_of_stock.load(Ordering::Relaxed) > 0 {
            println!(
                "\n{name}: {orders} orders created, {} paid, {} answered OUT_OF_STOCK, {} pays unanswered or 5xx",
                counters.paid.load(Ordering::Relaxed),
                counters.out_of_stock.load(Ordering::Relaxed),
                counters.pay_unknown.load(Ordering::Relaxed),
            );
        }
    }
    match hot_product {
        Some(product) => verify_hot(api, product, &stats.hot).await,
        None => true,
    }
}

/// The hot product's stock never goes below 0 and falls by exactly the units paid for; a pay without an
/// answer may or may not have committed, so it widens the allowed range by one unit each.
async fn verify_hot(api: &Api, initial: Product, counters: &Counters) -> bool {
    let paid = counters.paid.load(Ordering::Relaxed) as i64;
    let unknown = counters.pay_unknown.load(Ordering::Relaxed) as i64;
    let mut checks = Checks::default();
    match api.product(initial.id).await {
        Ok(now) => {
            let sold = initial.stock - now.stock;
            checks.check("stock never below 0", now.stock >= 0, format!("stock {} of {}", now.stock, initial.stock));
            checks.check(
                "units sold equal the payments answered 200",
                (paid..=paid + unknown).contains(&sold),
                format!("stock fell by {sold}, {paid} pays answered 200, {unknown} unanswered"),
            );
        }
        Err(e) => checks.check("the hot product can be read", false, e),
    }
    checks.print(&format!("checkout-hot verification (product {})", initial.id))
}
