//! The state every handler and job shares, built by [`crate::app`]. It lives apart from the composition
//! root so that nothing imports `app`.

use std::sync::Arc;

use crate::config::ServeConfig;
use crate::store::Stores;
use crate::{product, ranking};

/// What every handler and job shares. One `Arc`: axum clones the state for every request, and cloning
/// (and dropping) each field's own `Arc` instead showed up as 4% of the server's CPU under load.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub stores: Stores,
    pub config: Arc<ServeConfig>,
    /// The coupon domain: campaigns, issuance, held coupons.
    pub coupons: crate::coupon::Coupons,
    /// In-process mirror of the users known to exist (shared with [`Shared::coupons`]), refreshed by a job.
    pub users: crate::user::cache::KnownUsers,
    /// The catalogue: products and options, with in-process copies of listing pages and details.
    pub products: product::Catalog,
    /// The ranking's lists, served from an in-process copy.
    pub ranking: ranking::Ranking,
    /// Orders and their payment.
    pub orders: crate::order::Orders,
    /// Balances, charges and their history.
    pub balances: crate::balance::Balances,
    /// Who a request is, and the rate limits.
    pub identity: crate::identity::Identity,
}
