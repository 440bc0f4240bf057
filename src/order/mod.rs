//! Orders and payment.
//!
//! Create validates and prices an order (user, products, stock now, coupon) and stores it PENDING; it
//! reserves nothing. Pay is one MySQL transaction that only runs guarded writes, in a fixed lock order:
//!
//! 1. the order row (`PENDING -> PAID`, or the new order's INSERT for `"pay": true`),
//! 2. the coupon row (`AVAILABLE -> USED`),
//! 3. the balance row (`amount >= finalAmount` guard) and its PAYMENT entry,
//! 4. the payment and outbox INSERTs,
//! 5. the options bought, in ascending (product id, option id) order (`stock >= quantity` guard), last, so
//!    the hottest rows (a flash sale's option) are locked only for their own UPDATEs and the COMMIT, and
//!    multi-item orders never deadlock on each other.
//!
//! After the commit, every instance's catalogue copies of the products bought are dropped (see
//! `product::catalog`).
//!
//! Paying a stored order, every check that can be made without locks (order state, coupon, stock, balance)
//! is made first, so a doomed payment fails without taking a lock; the guards make the outcome right under
//! any concurrency. A `"pay": true` create checks only what pricing reads, then runs the transaction (see
//! [`Orders::create`]).
//! Those checks may run after a concurrent pay of the same order (a double click) committed and took what
//! they check, so a refusal is answered only while the order is still PENDING; otherwise the request lost
//! that race and gets ORDER_NOT_PAYABLE, as it would inside the transaction.

pub mod db;

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use thiserror::Error;

use crate::coupon::{self, HeldCoupon, HeldStatus};
use crate::id::{CouponId, OptionId, OrderId, ProductId, UserId};
use crate::platform::{EventItem, OrderEvent};
use crate::product::{self, Catalog, ProductOption};
use crate::store::{StoreError, Stores, mysql};
use crate::{balance, user};

/// Most distinct (product, option) lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line in one order.
pub const MAX_QUANTITY: i64 = 1000;

/// Why an order operation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// 400 INVALID_ORDER: empty items, a quantity outside 1..=1000, a repeated (product, option), an option
    /// left out for a product that has several, a total too large.
    #[error("{0}")]
    Invalid(String),
    /// 404 USER_NOT_FOUND.
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// 404 PRODUCT_NOT_FOUND.
    #[error("product {0} not found")]
    ProductNotFound(ProductId),
    /// 404 OPTION_NOT_FOUND: no such option of that product.
    #[error("product {product} has no option {option}")]
    OptionNotFound { product: ProductId, option: OptionId },
    /// 409 OUT_OF_STOCK, naming the option.
    #[error("option {option} ({name:?}) of product {product} does not have enough stock")]
    OutOfStock { product: ProductId, option: OptionId, name: String },
    /// 409 COUPON_UNAVAILABLE: not held by the user, already used, or outside its dates.
    #[error("coupon {0} cannot be used")]
    CouponUnavailable(CouponId),
    /// 409 INSUFFICIENT_BALANCE: the order stays PENDING; charge and pay again.
    #[error("balance is lower than the amount to pay ({0} won)")]
    InsufficientBalance(i64),
    /// 404 ORDER_NOT_FOUND: no such order, or another user's.
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// 409 ORDER_NOT_PAYABLE: the order is not PENDING.
    #[error("order {0} is not PENDING")]
    NotPayable(OrderId),
    /// 503: the pay transaction kept losing lock conflicts; nothing was changed.
    #[error("the order's rows are busy, retry later")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

crate::user::user_error_conversions!(Error);

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Encode, sqlx::Decode)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = OrderStatus)]
pub enum Status {
    Pending,
    Paid,
    Failed,
}

crate::store::mysql::text_column!(Status);

/// One requested line.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemRequest {
    pub product_id: ProductId,
    /// The option bought; may be left out only for a product sold in exactly one option.
    #[serde(default)]
    pub option_id: Option<OptionId>,
    /// 1..=1000.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::whole::i64")]
    pub quantity: i64,
}

/// An order as requested, before validation.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: UserId,
    pub items: Vec<ItemRequest>,
    pub coupon_id: Option<CouponId>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: ProductId,
    pub option_id: OptionId,
    /// The option's name when the order was created.
    pub option_name: String,
    pub quantity: i64,
    /// The option's price when the order was created, in won per unit.
    pub unit_price: i64,
    /// `quantity * unitPrice`.
    pub amount: i64,
}

/// A stored order. Items are in ascending (product id, option id) order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub status: Status,
    pub items: Vec<Item>,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub final_amount: i64,
    pub coupon_id: Option<CouponId>,
    pub created_at: DateTime<Utc>,
    /// Set once PAID (an extension of the contract).
    pub paid_at: Option<DateTime<Utc>>,
}

/// The result of a payment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paid {
    pub order_id: OrderId,
    pub status: Status,
    pub final_amount: i64,
    /// The payer's balance right after the payment.
    pub balance: i64,
    pub paid_at: DateTime<Utc>,
}

/// The order domain's handle: create, pay and read orders. Cheap to clone.
#[derive(Clone)]
pub struct Orders {
    stores: Stores,
    /// The catalogue, whose copies of the products bought a payment drops.
    catalog: Catalog,
}

impl Orders {
    pub fn new(stores: Stores, catalog: Catalog) -> Self {
        Self { stores, catalog }
    }

    /// Validates and prices `new`; stores it PENDING, or with `pay` creates and pays it in one transaction
    /// (then a failure leaves no order behind).
    pub async fn create(&self, new: NewOrder, pay: bool) -> Result<Order, Error> {
        let (stores, catalog) = (&self.stores, &self.catalog);
        let requested = validate_items(new.items)?;
        user::ensure_exists(stores, new.user_id).await?;
        let mut ids: Vec<ProductId> = requested.iter().map(|item| item.product_id).collect();
        ids.dedup();
        let items = price_items(&requested, &product::db::options_of(&stores.db, &ids).await?)?;
        let now = Utc::now().trunc_subsecs(6);
        let held = match new.coupon_id {
            Some(coupon_id) => Some(usable_coupon(stores, new.user_id, coupon_id, now).await?),
            None => None,
        };
        let total_amount =
            items.iter().try_fold(0i64, |sum, item| sum.checked_add(item.amount)).ok_or_else(too_large)?;
        let discount_amount = held.as_ref().map_or(0, |held| held.coupon.discount.amount_off(total_amount));
        let draft = Order {
            order_id: OrderId::new(i64::MAX).expect("placeholder id is positive"),
            user_id: new.user_id,
            status: Status::Pending,
            items,
            total_amount,
            discount_amount,
            final_amount: total_amount - discount_amount,
            coupon_id: new.coupon_id,
            created_at: now,
            paid_at: None,
        };
        if !pay {
            let order_id = db::insert_order(&stores.db, &draft).await?;
            return Ok(Order { order_id, ..draft });
        }
        // No balance check before the transaction, unlike the pay of a stored order: a new order's
        // transaction locks only rows of this user before its balance guard (its own new rows, its coupon,
        // its balance; options come last), so a doomed one holds up nobody, and a read first would cost
        // every successful checkout one more statement.
        let paid = pay_in_transaction(stores, catalog, &draft, held.as_ref(), None).await?;
        Ok(Order { order_id: paid.order_id, status: Status::Paid, paid_at: Some(paid.paid_at), ..draft })
    }

    /// Pays a PENDING order of `user_id`.
    pub async fn pay(&self, user_id: UserId, order_id: OrderId) -> Result<Paid, Error> {
        let (stores, catalog) = (&self.stores, &self.catalog);
        let order =
            db::find(&stores.db, order_id).await?.filter(|o| o.user_id == user_id).ok_or(Error::NotFound(order_id))?;
        if order.status != Status::Pending {
            return Err(Error::NotPayable(order_id));
        }
        // Checks without locks first, so a doomed payment takes none; a failure here is as final as one
        // inside the transaction, since coupons are never returned and stock only goes down.
        let now = Utc::now().trunc_subsecs(6);
        let held = match order.coupon_id {
            Some(coupon_id) => match usable_coupon(stores, user_id, coupon_id, now).await {
                Ok(held) => Some(held),
                Err(e @ Error::CouponUnavailable(_)) => return fail(stores, order_id, e).await,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let ids: Vec<OptionId> = order.items.iter().map(|item| item.option_id).collect();
        let stocks = db::stocks(&stores.db, &ids).await?;
        let in_stock = |item: &&Item| stocks.iter().any(|(id, stock)| *id == item.option_id && *stock >= item.quantity);
        if let Some(item) = order.items.iter().find(|item| !in_stock(item)) {
            return fail(stores, order_id, item.out_of_stock()).await;
        }
        let balance = balance::db::amount(&stores.db, user_id).await?.unwrap_or(0);
        if balance < order.final_amount {
            return short_of_balance(stores, &order).await;
        }
        match pay_in_transaction(stores, catalog, &order, held.as_ref(), Some(order_id)).await {
            Err(e @ (Error::OutOfStock { .. } | Error::CouponUnavailable(_))) => fail(stores, order_id, e).await,
            result => result,
        }
    }

    /// The order with its current status.
    pub async fn get(&self, order_id: OrderId) -> Result<Order, Error> {
        db::find(&self.stores.db, order_id).await?.ok_or(Error::NotFound(order_id))
    }
}

/// INSUFFICIENT_BALANCE, unless the order stopped being PENDING since it was read: then a concurrent pay of
/// the same order (a double click) won, and its payment is what made the balance short, so this request is
/// the loser and gets ORDER_NOT_PAYABLE. The order is read after the balance, so a payment the balance
/// check saw is one whose PAID status this read sees too (both committed together).
async fn short_of_balance<T>(stores: &Stores, order: &Order) -> Result<T, Error> {
    match db::find(&stores.db, order.order_id).await? {
        Some(now) if now.status != Status::Pending => Err(Error::NotPayable(order.order_id)),
        _ => Err(Error::InsufficientBalance(order.final_amount)),
    }
}

/// Marks a PENDING order FAILED after an OUT_OF_STOCK or COUPON_UNAVAILABLE, and returns that error; or
/// ORDER_NOT_PAYABLE when the order is not PENDING any more. That is the loser of a double click: it read
/// the order PENDING, then checked stock or coupon after the winner's payment had taken them.
async fn fail<T>(stores: &Stores, order_id: OrderId, error: Error) -> Result<T, Error> {
    if db::mark_failed(&stores.db, order_id).await? { Err(error) } else { Err(Error::NotPayable(order_id)) }
}

fn too_large() -> Error {
    Error::Invalid("the order total is too large".to_owned())
}

/// Non-empty, at most [`MAX_ITEMS`], quantities 1..=[`MAX_QUANTITY`]; sorted by product.
fn validate_items(mut items: Vec<ItemRequest>) -> Result<Vec<ItemRequest>, Error> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(Error::Invalid(format!("an order needs 1..={MAX_ITEMS} items")));
    }
    if let Some(item) = items.iter().find(|item| !(1..=MAX_QUANTITY).contains(&item.quantity)) {
        return Err(Error::Invalid(format!(
            "quantity of product {} must be 1..={MAX_QUANTITY}, not {}",
            item.product_id, item.quantity
        )));
    }
    items.sort_by_key(|item| item.product_id);
    Ok(items)
}

/// Prices each requested line at its option, from `options` (every option of the products asked for);
/// the lines come back sorted by (product id, option id), the pay transaction's lock order, and distinct.
fn price_items(
    requested: &[ItemRequest],
    options: &HashMap<ProductId, Vec<ProductOption>>,
) -> Result<Vec<Item>, Error> {
    let mut items = Vec::with_capacity(requested.len());
    for request in requested {
        let product = request.product_id;
        let of_product = options.get(&product).filter(|of| !of.is_empty()).ok_or(Error::ProductNotFound(product))?;
        let option = match request.option_id {
            Some(id) => {
                of_product.iter().find(|option| option.id == id).ok_or(Error::OptionNotFound { product, option: id })?
            }
            None => match of_product.as_slice() {
                [only] => only,
                _ => {
                    return Err(Error::Invalid(format!(
                        "product {product} is sold in several options: name one with optionId"
                    )));
                }
            },
        };
        let item = Item {
            product_id: product,
            option_id: option.id,
            option_name: option.name.clone(),
            quantity: request.quantity,
            unit_price: option.price,
            amount: option.price.checked_mul(request.quantity).ok_or_else(too_large)?,
        };
        if option.stock < request.quantity {
            return Err(item.out_of_stock());
        }
        items.push(item);
    }
    items.sort_by_key(|item| (item.product_id, item.option_id));
    if let Some(pair) =
        items.windows(2).find(|pair| (pair[0].product_id, pair[0].option_id) == (pair[1].product_id, pair[1].option_id))
    {
        return Err(Error::Invalid(format!(
            "option {} of product {} appears twice",
            pair[0].option_id, pair[0].product_id
        )));
    }
    Ok(items)
}

impl Item {
    fn out_of_stock(&self) -> Error {
        Error::OutOfStock { product: self.product_id, option: self.option_id, name: self.option_name.clone() }
    }
}

/// The coupon as held by `user_id`, if AVAILABLE to them now (issued a moment ago and not yet persisted
/// included: `held_by` also answers from Redis).
async fn usable_coupon(
    stores: &Stores,
    user_id: UserId,
    coupon_id: CouponId,
    now: DateTime<Utc>,
) -> Result<HeldCoupon, Error> {
    let held = coupon::held_by(stores, user_id, coupon_id).await.map_err(|e| match e {
        coupon::Error::Store(e) => Error::Store(e),
        _ => Error::CouponUnavailable(coupon_id),
    })?;
    held.filter(|held| held.status == HeldStatus::Available && held.coupon.is_active_at(now))
        .ok_or(Error::CouponUnavailable(coupon_id))
}

/// Runs the pay transaction (see the module docs for its lock order), rerunning it after a lost deadlock.
/// `existing`: the PENDING order to pay; `None` inserts `order` as a new PAID order in the transaction.
async fn pay_in_transaction(
    stores: &Stores,
    catalog: &Catalog,
    order: &Order,
    held: Option<&HeldCoupon>,
    existing: Option<OrderId>,
) -> Result<Paid, Error> {
    let outcome = mysql::retry_on_conflict(
        || async {
            let now = Utc::now().trunc_subsecs(6);
            pay_once(&stores.db, order, held, existing, now).await
        },
        mysql::is_lock_conflict,
    )
    .await;
    match outcome {
        Ok(PayOutcome::Paid(paid)) => {
            let mut bought: Vec<ProductId> = order.items.iter().map(|item| item.product_id).collect();
            bought.dedup();
            catalog.changed(&bought);
            Ok(paid)
        }
        Ok(PayOutcome::NotPayable) => Err(Error::NotPayable(order.order_id)),
        Ok(PayOutcome::CouponUsed) => {
            Err(Error::CouponUnavailable(order.coupon_id.expect("only an order with a coupon uses one")))
        }
        Ok(PayOutcome::CouponStateRebuilt) => Err(Error::Contended),
        Ok(PayOutcome::InsufficientBalance) => Err(Error::InsufficientBalance(order.final_amount)),
        Ok(PayOutcome::OutOfStock(item)) => Err(order.items[item].out_of_stock()),
        Err(e) if mysql::is_lock_conflict(&e) => {
            tracing::warn!(order.user_id = %order.user_id, error = %e, "pay transaction kept losing lock conflicts");
            Err(Error::Contended)
        }
        Err(e) => Err(e.into()),
    }
}

/// What one run of the pay transaction did; every refusal rolled it back.
enum PayOutcome {
    Paid(Paid),
    NotPayable,
    CouponUsed,
    /// The coupon was known only to a Redis state that has been rebuilt since: whether it is still held is
    /// for the writer to decide, so the client retries.
    CouponStateRebuilt,
    InsufficientBalance,
    /// The index of the item short of stock.
    OutOfStock(usize),
}

/// One run of the pay transaction, in the lock order of the module docs.
async fn pay_once(
    pool: &MySqlPool,
    order: &Order,
    held: Option<&HeldCoupon>,
    existing: Option<OrderId>,
    now: DateTime<Utc>,
) -> Result<PayOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let order_id = match existing {
        Some(order_id) => {
            if !db::mark_paid(&mut tx, order_id, order.user_id, now).await? {
                tx.rollback().await?;
                return Ok(PayOutcome::NotPayable);
            }
            order_id
        }
        None => db::insert_paid(&mut tx, order, now).await?,
    };
    if let (Some(coupon_id), Some(held)) = (order.coupon_id, held) {
        // An issuance only Redis knows is inserted here, so it is fenced like the writer's (coupon::fence):
        // the campaign row first, shared, then the user's row.
        if let Some(generation) = held.unpersisted_generation
            && !coupon::db::generation_is(&mut tx, coupon_id, generation).await?
        {
            tx.rollback().await?;
            return Ok(PayOutcome::CouponStateRebuilt);
        }
        // Lock the user's coupon row before `mark_used` reads it, so concurrent pays with it queue on an
        // exclusive lock instead of deadlocking on shared ones (its INSERT IGNORE takes S on a duplicate).
        // Only a persisted row: an issuance known only to Redis has none yet, and locking a missing row takes
        // a gap lock that every concurrent buyer of the campaign shares, so their INSERTs into that gap
        // deadlocked on each other (200 pays at once lost 5 retries in CI); its INSERT locks the new row.
        if held.unpersisted_generation.is_none() {
            db::lock_coupon(&mut tx, order.user_id, coupon_id).await?;
        }
        if !coupon::db::mark_used(&mut tx, order.user_id, coupon_id, held.issued_at, order_id, now).await? {
            tx.rollback().await?;
            return Ok(PayOutcome::CouponUsed);
        }
    }
    let Some(balance) = balance::db::deduct(&mut tx, order.user_id, order.final_amount, order_id, now).await? else {
        tx.rollback().await?;
        return Ok(PayOutcome::InsufficientBalance);
    };
    db::insert_payment(&mut tx, order_id, order.user_id, order.final_amount, now).await?;
    db::insert_outbox(&mut tx, &event(order, order_id, now)).await?;
    // Options last, in (product, option) order (items are sorted when priced): no deadlock between
    // multi-item orders, and the hottest rows are held only for these UPDATEs and the COMMIT.
    for (index, item) in order.items.iter().enumerate() {
        if !db::take_stock(&mut tx, item.option_id, item.quantity).await? {
            tx.rollback().await?;
            return Ok(PayOutcome::OutOfStock(index));
        }
    }
    tx.commit().await?;
    Ok(PayOutcome::Paid(Paid {
        order_id,
        status: Status::Paid,
        final_amount: order.final_amount,
        balance,
        paid_at: now,
    }))
}

/// The event relayed to the data platform, built from a paid order.
fn event(order: &Order, order_id: OrderId, paid_at: DateTime<Utc>) -> OrderEvent {
    OrderEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        order_id,
        user_id: order.user_id,
        items: order
            .items
            .iter()
            .map(|item| EventItem {
                product_id: item.product_id,
                option_id: Some(item.option_id),
                option_name: Some(item.option_name.clone()),
                quantity: item.quantity,
                unit_price: item.unit_price,
                amount: item.amount,
            })
            .collect(),
        final_amount: order.final_amount,
        paid_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, quantity: i64) -> ItemRequest {
        ItemRequest { product_id: ProductId::new(id).unwrap(), option_id: None, quantity }
    }

    fn of(product: i64, option: Option<i64>) -> ItemRequest {
        ItemRequest {
            product_id: ProductId::new(product).unwrap(),
            option_id: option.and_then(OptionId::new),
            quantity: 1,
        }
    }

    /// Options `(id, product)` as the catalogue hands them out, by product.
    fn options(pairs: &[(i64, i64)]) -> HashMap<ProductId, Vec<ProductOption>> {
        let mut by_product: HashMap<ProductId, Vec<ProductOption>> = HashMap::new();
        for &(id, product) in pairs {
            by_product.entry(ProductId::new(product).unwrap()).or_default().push(ProductOption {
                id: OptionId::new(id).unwrap(),
                name: format!("option {id}"),
                price: 10,
                stock: 5,
                status: crate::product::Status::OnSale,
            });
        }
        by_product
    }

    #[test]
    fn lines_are_sorted_by_product_and_option_so_every_payment_locks_in_one_order() {
        let options = options(&[(7, 1), (3, 1), (5, 2), (9, 3)]);
        let requested = validate_items(vec![of(3, None), of(1, Some(7)), of(2, None), of(1, Some(3))]).unwrap();
        let items = price_items(&requested, &options).unwrap();
        let order: Vec<_> = items.iter().map(|i| (i.product_id.get(), i.option_id.get())).collect();
        assert_eq!(order, [(1, 3), (1, 7), (2, 5), (3, 9)]);
    }

    #[test]
    fn an_option_is_named_for_a_product_with_several_and_found_only_in_its_own_product() {
        let options = options(&[(3, 1), (7, 1), (5, 2)]);
        assert!(matches!(price_items(&[of(1, None)], &options), Err(Error::Invalid(_))));
        assert!(matches!(price_items(&[of(2, Some(3))], &options), Err(Error::OptionNotFound { .. })));
        assert!(matches!(price_items(&[of(4, None)], &options), Err(Error::ProductNotFound(_))));
        assert!(matches!(price_items(&[of(2, None), of(2, Some(5))], &options), Err(Error::Invalid(_))));
        assert!(matches!(price_items(&[of(1, Some(3)), of(1, Some(3))], &options), Err(Error::Invalid(_))));
    }

    #[test]
    fn items_must_be_non_empty_and_in_range() {
        assert!(validate_items(vec![]).is_err());
        assert!(validate_items(vec![item(1, 0)]).is_err());
        assert!(validate_items(vec![item(1, 1001)]).is_err());
        assert!(validate_items((1..=101).map(|id| item(id, 1)).collect()).is_err());
    }
}
