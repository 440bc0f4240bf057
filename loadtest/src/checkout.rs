//! Buyers: charge the balance, order one unit of an option (with the checkout coupon on a buyer's first
//! order), pay. `checkout` buys random options across the catalog; `checkout-hot` has every buyer after one
//! option with `HOT_STOCK` units, so payments contend on one stock row and the option sells out mid-run.
//!
//! After the run, [`verify_hot`] checks the hot option's stock against the payments the buyers saw, and
//! that the other option of its product was not touched.

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
    let (product, option) = match variant {
        Variant::Hot => {
            let product = checkout.hot_product.as_ref().ok_or_else(|| crate::missing("hot product"))?;
            (product, product.options[0])
        }
        Variant::Catalog => {
            let product = &fixture.catalog[rand::random_range(0..fixture.catalog.len())];
            (product, product.options[rand::random_range(0..product.options.len())])
        }
    };
    let counters = shared.checkout.of(variant);
    let (member, first_order) = checkout.buyers.take_cycling();
    let (buyer, token) = (member.id, member.token.as_str());

    let path = format!("/api/v1/users/{buyer}/balance/charge");
    let charged = request::post(user, &path, token, &json!({ "amount": option.price })).await?;
    request::record(user, CHARGE, &charged, charged.expect(&[200])).await?;

    let item = json!({ "productId": product.id, "optionId": option.id, "quantity": 1 });
    let mut order = json!({ "userId": buyer, "items": [item] });
    if first_order {
        order["couponId"] = json!(checkout.coupon_id);
    }
    let created = request::post(user, "/api/v1/orders", token, &order).await?;
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
    let paid = request::post(user, &path, token, &json!({ "userId": buyer })).await?;
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

/// The hot option's stock never goes below 0 and falls by exactly the units paid for (a pay without an
/// answer may or may not have committed, so it widens the allowed range by one unit each); the product's
/// other option keeps its stock.
async fn verify_hot(api: &Api, initial: Product, counters: &Counters) -> bool {
    let paid = counters.paid.load(Ordering::Relaxed) as i64;
    let unknown = counters.pay_unknown.load(Ordering::Relaxed) as i64;
    let mut checks = Checks::default();
    match api.product(initial.id).await {
        Ok(now) => {
            let (hot, before) = (now.options[0], initial.options[0]);
            let sold = before.stock - hot.stock;
            checks.check("stock never below 0", hot.stock >= 0, format!("stock {} of {}", hot.stock, before.stock));
            checks.check(
                "the other option is untouched",
                now.options[1].stock == initial.options[1].stock,
                format!("stock {} of {}", now.options[1].stock, initial.options[1].stock),
            );
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
