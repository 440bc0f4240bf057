//! stampede's load test, on goose: `cargo run -p loadtest --release -- --host http://127.0.0.1:8080
//! --scenarios flash-sale --users 200 --increase-rate 200 --run-time 30s --report-file report.html`.
//!
//! Goose owns the command line (`--help` lists it, with this crate's environment knobs first); set-up
//! needs no manual step: goose's `test_start` transaction creates users, products and coupons through
//! the admin API (`ADMIN_TOKEN`). After the run the load test verifies what it can from outside (the
//! flash sale's exact counts, the hot product's stock) and exits non-zero when a check fails.
//!
//! Scenarios, one module per kind of user: [`flash_sale`], [`checkout`], [`browse`], and `mixed`, the
//! three together with goose scenario weights.

mod api;
mod browse;
mod checkout;
mod fixture;
mod flash_sale;
mod report;
mod request;
mod settings;
mod token;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use goose::config::GooseConfiguration;
use goose::prelude::*;

use crate::api::Api;
use crate::checkout::Variant;
use crate::fixture::{Fixture, Needs};
use crate::settings::Settings;

/// The kinds of virtual user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FlashSale,
    Checkout,
    CheckoutHot,
    Browse,
}

/// Every scenario: name (goose's machine name drops the '-'), kind, goose weight. A run picks some with
/// `--scenarios`; each user runs one scenario, chosen in proportion to the weights of those picked.
const SCENARIOS: [(&str, Kind, usize); 7] = [
    ("flash-sale", Kind::FlashSale, 1),
    ("checkout", Kind::Checkout, 1),
    ("checkout-hot", Kind::CheckoutHot, 1),
    ("browse", Kind::Browse, 1),
    // A sale day: mostly browsing, some coupon hunting, some buying.
    ("mixed-browse", Kind::Browse, 7),
    ("mixed-flash-sale", Kind::FlashSale, 2),
    ("mixed-checkout", Kind::Checkout, 1),
];

/// `--scenarios` names that stand for a group of scenarios.
const GROUPS: [(&str, &str); 1] = [("mixed", "mixed*")];

/// What runs without `--scenarios`.
const DEFAULT_SCENARIOS: &str = "mixed*";

/// State shared by set-up, every virtual user and verification.
pub struct Shared {
    settings: Settings,
    needs: Needs,
    /// Set once by the `test_start` transaction, before any virtual user starts.
    fixture: OnceLock<Fixture>,
    flash_sale: flash_sale::Stats,
    checkout: checkout::Stats,
}

impl Shared {
    /// The fixture; every scenario's transactions run after set-up made it.
    fn fixture(&self) -> Result<&Fixture, Box<TransactionError>> {
        self.fixture.get().ok_or_else(|| missing("set-up"))
    }
}

/// The error of a transaction that finds a part of the fixture missing (set-up did not make it).
fn missing(what: &str) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(format!("{what} fixture missing")))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(passed) if passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the load test; `Ok(false)` when a verification failed.
async fn run() -> Result<bool, api::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{}", settings::HELP);
        // Prints goose's own help and exits.
        GooseConfiguration::parse_args_default_or_exit();
    }
    let config = GooseConfiguration::parse_args_default(&normalize_args(args)).map_err(explain)?;
    let settings = Settings::from_env()?;

    let patterns = match &config.scenarios {
        Some(scenarios) => scenarios.active.clone(),
        None => vec![DEFAULT_SCENARIOS.to_string()],
    };
    let active: Vec<Kind> = SCENARIOS
        .iter()
        .filter(|(name, ..)| patterns.iter().any(|pattern| wildcard_match(pattern, &machine_name(name))))
        .map(|&(_, kind, _)| kind)
        .collect();
    let needs = Needs {
        catalog: active.iter().any(|kind| matches!(kind, Kind::Browse | Kind::Checkout)),
        flash_sale: active.contains(&Kind::FlashSale),
        checkout: active.iter().any(|kind| matches!(kind, Kind::Checkout | Kind::CheckoutHot)),
        hot_product: active.contains(&Kind::CheckoutHot),
    };
    let shared = Arc::new(Shared {
        settings,
        needs,
        fixture: OnceLock::new(),
        flash_sale: flash_sale::Stats::default(),
        checkout: checkout::Stats::default(),
    });

    let mut attack = (*GooseAttack::initialize_with_config(config)?
        .set_default(GooseDefault::Scenarios, DEFAULT_SCENARIOS)?)
    .test_start(transaction("set-up", &shared, |user, shared| Box::pin(set_up(user, shared))));
    for (name, kind, weight) in SCENARIOS {
        attack = attack.register_scenario(scenario(name, kind, weight, &shared)?);
    }
    attack.execute().await.map_err(explain)?;
    verify(&shared).await
}

/// A goose error with its detail: goose's `Display` of an invalid option names neither option nor reason.
fn explain(error: GooseError) -> api::Error {
    match error {
        GooseError::InvalidOption { option, value, detail } => format!("{option} {value}: {detail}").into(),
        other => other.into(),
    }
}

/// Goose's `test_start` transaction: creates the fixture the active scenarios need.
///
/// Goose ignores what `test_start` returns and starts the users anyway, which would then fail every
/// request for the whole `--run-time`; so a failed set-up ends the process here, before any user
/// started and with nothing yet to report.
async fn set_up(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let host = user.base_url.as_str();
    let made = match Api::new(host, &shared.settings.admin_token, &shared.settings.jwt_secret) {
        Ok(api) => fixture::set_up(api, &shared.settings, shared.needs).await,
        Err(e) => Err(e),
    };
    match made {
        Ok(fixture) => {
            let _ = shared.fixture.set(fixture);
            Ok(())
        }
        Err(e) => {
            eprintln!("loadtest: set-up against {host} failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Points this virtual user at its instance of `INSTANCES`: user n at instance n mod count, so the users
/// of every scenario are spread evenly over the instances.
async fn pick_instance(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let instances = &shared.settings.instances;
    user.set_base_url(&instances[user.weighted_users_index % instances.len()])
}

/// Checks what the run left behind; `true` when everything that ran passed its checks.
async fn verify(shared: &Shared) -> Result<bool, api::Error> {
    let Some(fixture) = shared.fixture.get() else {
        return Ok(true);
    };
    let mut passed = true;
    if let Some(flash) = &fixture.flash_sale {
        passed &= flash_sale::verify(&fixture.api, flash, &shared.flash_sale, shared.settings.setup_concurrency).await;
    }
    if let Some(checkout) = &fixture.checkout {
        passed &= checkout::verify(&fixture.api, checkout.hot_product.clone(), &shared.checkout).await;
    }
    Ok(passed)
}

fn scenario(name: &str, kind: Kind, weight: usize, shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    let mut scenario = Scenario::new(name).set_weight(weight)?;
    if !shared.settings.instances.is_empty() {
        scenario = scenario.register_transaction(
            transaction("pick instance", shared, |user, shared| Box::pin(pick_instance(user, shared))).set_on_start(),
        );
    }
    Ok(match kind {
        Kind::FlashSale => scenario.register_transaction(transaction("issue", shared, |user, shared| {
            Box::pin(flash_sale::issue(user, shared))
        })),
        Kind::Checkout => scenario.register_transaction(transaction("checkout", shared, |user, shared| {
            Box::pin(checkout::buy(user, shared, Variant::Catalog))
        })),
        Kind::CheckoutHot => {
            scenario.register_transaction(transaction("checkout hot product", shared, |user, shared| {
                Box::pin(checkout::buy(user, shared, Variant::Hot))
            }))
        }
        Kind::Browse => scenario
            .register_transaction(
                transaction("list", shared, |user, shared| Box::pin(browse::list(user, shared))).set_weight(3)?,
            )
            .register_transaction(
                transaction("detail", shared, |user, shared| Box::pin(browse::detail(user, shared))).set_weight(5)?,
            )
            .register_transaction(
                transaction("top", shared, |user, shared| Box::pin(browse::top(user, shared))).set_weight(2)?,
            ),
    })
}

/// A goose transaction named `name` running `step` with the shared state (goose's `transaction!` takes
/// only functions of the user).
fn transaction<F>(name: &str, shared: &Arc<Shared>, step: F) -> Transaction
where
    F: for<'r> Fn(&'r mut GooseUser, Arc<Shared>) -> Pin<Box<dyn Future<Output = TransactionResult> + Send + 'r>>
        + Send
        + Sync
        + 'static,
{
    let shared = Arc::clone(shared);
    Transaction::new(Arc::new(move |user| step(user, Arc::clone(&shared)))).set_name(name)
}

/// Goose's machine name of a scenario, which `--scenarios` matches: its letters and digits, lower case.
fn machine_name(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase()
}

/// Lets `--scenarios` take scenario names as written (`flash-sale`; goose only accepts `flashsale`) and
/// groups (`mixed`), and accepts `--hatch-rate` for goose's `--increase-rate`.
fn normalize_args(args: Vec<String>) -> Vec<String> {
    let patterns = |list: &str| {
        list.split(',')
            .map(|pattern| {
                let pattern = pattern.trim().replace('-', "").to_lowercase();
                GROUPS.iter().find(|(group, _)| *group == pattern).map_or(pattern, |(_, members)| members.to_string())
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut normalized = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--scenarios" {
            normalized.push(arg);
            normalized.extend(args.next().map(|list| patterns(&list)));
        } else if let Some(list) = arg.strip_prefix("--scenarios=") {
            normalized.push(format!("--scenarios={}", patterns(list)));
        } else if let Some(rest) = arg.strip_prefix("--hatch-rate") {
            normalized.push(format!("--increase-rate{rest}"));
        } else {
            normalized.push(arg);
        }
    }
    normalized
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (as goose matches
/// `--scenarios`).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix) && (prefix.len()..=text.len()).any(|start| wildcard_match(rest, &text[start..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn scenario_names_are_accepted_as_written_and_groups_expand() {
        let args = normalize_args(strings(&["--scenarios", "flash-sale, Checkout-Hot,mixed", "--hatch-rate", "5"]));
        assert_eq!(args, strings(&["--scenarios", "flashsale,checkouthot,mixed*", "--increase-rate", "5"]));
        let args = normalize_args(strings(&["--scenarios=browse", "--hatch-rate=2", "-u", "4"]));
        assert_eq!(args, strings(&["--scenarios=browse", "--increase-rate=2", "-u", "4"]));
    }

    #[test]
    fn patterns_select_scenarios_as_goose_does() {
        assert!(wildcard_match("mixed*", &machine_name("mixed-flash-sale")));
        assert!(wildcard_match("*sale", &machine_name("mixed-flash-sale")));
        assert!(wildcard_match("flashsale", &machine_name("flash-sale")));
        assert!(!wildcard_match("flashsale", &machine_name("mixed-flash-sale")));
        assert!(!wildcard_match("checkout", &machine_name("checkout-hot")));
        assert!(wildcard_match("check*hot", &machine_name("checkout-hot")));
    }
}
