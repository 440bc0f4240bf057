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
    /// Makes a burst of requests for an uncached ranking window compute it once.
    pub ranking_gate: ranking::ComputeGate,
    /// The ranking's lists, serialized, in process: what `GET /products/top` answers from.
    pub ranking_copy: ranking::published::Published,
}
