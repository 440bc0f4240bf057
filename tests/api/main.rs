//! The one integration-test binary: real Redis, real MariaDB, real HTTP. One module per resource.

mod support;

mod admin;
mod errors;
mod health;
mod products;
mod ranking;
