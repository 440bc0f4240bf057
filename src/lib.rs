//! stampede: a Redis-first coupon and ranking engine for e-commerce flash sales.
//!
//! # Layout
//!
//! - [`config`]: the command line and environment, one clap struct per concern.
//! - [`app`]: builds the state and listener, runs the server and background jobs until shutdown.
//! - [`state`]: what every handler and job shares.
//! - [`identity`]: who a request is (`AUTH_MODE` jwt, gateway or none) and the per-user and per-address rate limits.
//! - [`http`]: routing, middleware, the error envelope; handlers translate HTTP to domain calls.
//! - [`store`]: MySQL pool and migrations, Redis pool, the Lua script registry ([`store::scripts`]), error classification.
//! - Domains, each with its rules (`mod.rs`), SQL (`db.rs`) and Redis calls (`cache.rs`):
//!   [`user`], [`product`], [`coupon`], [`ranking`], [`balance`], [`order`].
//! - [`platform`]: the outbox relay delivering paid orders to the data platform.
//! - [`retention`]: the job deleting delivered outbox rows and old idempotency keys.
//! - [`seed`]: bulk test data for load tests.
//! - [`whole`]: integers as JSON Schema defines them (`3.0` is one), for request fields.

pub mod app;
pub mod balance;
pub mod config;
pub mod coupon;
pub mod http;
pub mod id;
pub mod identity;
pub mod order;
pub mod platform;
pub mod product;
pub mod ranking;
pub mod retention;
pub mod seed;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ticker;
pub mod user;
pub mod whole;
