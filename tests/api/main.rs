//! The one integration-test binary: real Redis, real MariaDB, real HTTP. One module per resource.

mod support;

mod admin;
mod balance;
mod cluster;
mod coupons;
mod dashboard;
mod docs;
mod errors;
mod health;
mod identity;
mod journey;
mod options;
mod orders;
mod outbox;
mod products;
mod ranking;
mod redis_loss;
mod redis_trust;
mod retention;
mod users;
