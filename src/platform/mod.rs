//! The data platform: the order event written to the outbox in the pay transaction, the relay that
//! delivers it after commit (and counts the order's units in the daily sales set), and where it goes.

pub mod db;
pub mod relay;
pub mod sink;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{OptionId, OrderId, ProductId, UserId};

/// What the data platform receives for each paid order, as JSON. `eventId` is fixed when the payment
/// commits, so every retry of one event carries the same id and the platform can deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub event_id: String,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub items: Vec<EventItem>,
    pub final_amount: i64,
    pub paid_at: DateTime<Utc>,
}

/// One line of a paid order, as in the order. Events written before products had options carry no option
/// (`null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventItem {
    pub product_id: ProductId,
    #[serde(default)]
    pub option_id: Option<OptionId>,
    #[serde(default)]
    pub option_name: Option<String>,
    pub quantity: i64,
    pub unit_price: i64,
    pub amount: i64,
}
