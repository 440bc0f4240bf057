//! The load test's own knobs, read from the environment (goose owns the command line).

use std::env;
use std::str::FromStr;

/// Sizes of what set-up creates and how the virtual users behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bearer token of the admin API, used only by set-up and verification.
    pub admin_token: String,
    /// `AUTH_JWT_SECRET`: the server's HS256 secret; every user the load test acts for gets a token signed with it.
    pub jwt_secret: String,
    /// `FLASH_QUANTITY`: the flash-sale coupon's total quantity.
    pub flash_quantity: u64,
    /// `FLASH_USERS`: users created for the flash sale; each asks once, so this bounds the demand.
    pub flash_users: usize,
    /// `FLASH_REPEAT_PERCENT`: share of winners that ask again at once, to exercise the dedupe path.
    pub flash_repeat_percent: u32,
    /// `CATALOG_PRODUCTS`: products created for browsing and ordinary checkout.
    pub catalog_products: usize,
    /// `CHECKOUT_USERS`: buyers created for the checkout scenarios, each holding one checkout coupon.
    pub checkout_users: usize,
    /// `OPTIONS_PER_PRODUCT`: options (sizes) of each catalog product, each with its own stock.
    pub options_per_product: usize,
    /// `HOT_STOCK`: stock of the one option every `checkout-hot` buyer wants.
    pub hot_stock: u64,
    /// `SETUP_CONCURRENCY`: admin requests in flight at once during set-up and verification.
    pub setup_concurrency: usize,
    /// `INSTANCES`: base URLs of several stampede instances sharing one Redis and MySQL; virtual user n
    /// sends its requests to instance `n mod len` (set-up and verification use `--host`). Empty: every user
    /// uses `--host`.
    pub instances: Vec<String>,
}

impl Settings {
    /// Reads every knob, with its default when unset; a value that does not parse is an error.
    pub fn from_env() -> Result<Self, String> {
        let settings = Self {
            admin_token: env::var("ADMIN_TOKEN").unwrap_or_else(|_| "dev-admin-token".to_string()),
            jwt_secret: env::var("AUTH_JWT_SECRET").unwrap_or_else(|_| DEV_JWT_SECRET.to_string()),
            flash_quantity: var("FLASH_QUANTITY", 1000)?,
            flash_users: var("FLASH_USERS", 5000)?,
            flash_repeat_percent: var("FLASH_REPEAT_PERCENT", 10)?,
            catalog_products: var("CATALOG_PRODUCTS", 100)?,
            checkout_users: var("CHECKOUT_USERS", 1000)?,
            options_per_product: var("OPTIONS_PER_PRODUCT", 3)?,
            hot_stock: var("HOT_STOCK", 1000)?,
            setup_concurrency: var("SETUP_CONCURRENCY", 32)?,
            instances: env::var("INSTANCES")
                .unwrap_or_default()
                .split(',')
                .map(|url| url.trim().trim_end_matches('/').to_string())
                .filter(|url| !url.is_empty())
                .collect(),
        };
        if let Some(bad) =
            settings.instances.iter().find(|url| !url.starts_with("http://") && !url.starts_with("https://"))
        {
            return Err(format!("INSTANCES: {bad:?} is not an http(s) URL"));
        }
        if !(1..=100).contains(&settings.options_per_product) {
            return Err("OPTIONS_PER_PRODUCT must be 1..=100".to_string());
        }
        if settings.flash_repeat_percent > 100 {
            return Err("FLASH_REPEAT_PERCENT must be 0..=100".to_string());
        }
        if settings.catalog_products == 0 || settings.checkout_users == 0 || settings.setup_concurrency == 0 {
            return Err("CATALOG_PRODUCTS, CHECKOUT_USERS and SETUP_CONCURRENCY must be at least 1".to_string());
        }
        Ok(settings)
    }
}

/// The development secret `make run` and `make load` start the server with (stampede's `DEV_JWT_SECRET`).
const DEV_JWT_SECRET: &str = "stampede-development-secret-do-not-deploy";

/// The knobs as `--help` lists them: name, default, meaning.
pub const HELP: &str = "\
Environment (the load test's own knobs; goose's options follow):
  ADMIN_TOKEN           dev-admin-token  bearer token of the admin API (set-up and verification)
  AUTH_JWT_SECRET       the dev secret   the server's HS256 secret: each user acted for gets its own token
  FLASH_QUANTITY        1000   flash-sale coupon quantity
  FLASH_USERS           5000   users created for the flash sale; each asks once
  FLASH_REPEAT_PERCENT  10     share of winners that ask again at once (must get 409 or 410)
  CATALOG_PRODUCTS      100    products created for browse and checkout
  CHECKOUT_USERS        1000   buyers created for checkout, each issued one checkout coupon
  OPTIONS_PER_PRODUCT   3      options (sizes) of each catalog product, each with its own stock
  HOT_STOCK             1000   stock of the option every checkout-hot buyer wants (its product has a
                               second option nobody buys)
  SETUP_CONCURRENCY     32     admin requests in flight during set-up and verification
  INSTANCES             (none) comma-separated base URLs of several instances on one Redis and MySQL:
                               virtual user n uses instance n mod count; set-up and checks use --host

Scenarios (--scenarios, comma separated; '-' may be left out, * is a wildcard):
  flash-sale    every user issues the flash coupon for a fresh user id until the pool is spent
  checkout      charge, order an option with a coupon, pay, over the catalog
  checkout-hot  the same, every buyer after one option with HOT_STOCK units
  browse        product list, detail, top 5
  mixed         a sale day: mixed-browse (weight 7), mixed-flash-sale (2), mixed-checkout (1);
                the default without --scenarios
";

fn var<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match env::var(name) {
        Ok(raw) => raw.trim().parse().map_err(|_| format!("{name}={raw:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}
