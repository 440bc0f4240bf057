//! The flash sale: a coupon of quantity Q and many more users than Q, every virtual user asking for it
//! on behalf of fresh users from the fixture's pool, each user once. Some winners ask again at once,
//! as an impatient double click does, which must never issue a second coupon.
//!
//! After the run, [`verify`] checks the contract's first-come-first-served guarantee from both sides:
//! the answers the users got and the server's own counts once its writer has drained.
//!
//! # Latency per outcome
//! The report has one row per route, where 201, 409 and 410 all count as successes when they are the
//! right answer (see [`crate::request`]); its status-code table says how many of each. Giving each
//! outcome a row of its own in the report would take a second record per request, doubling the route's
//! requests in the report's totals and throughput graphs. So this module keeps every answer's time to
//! first byte in its own sample list and prints percentiles per outcome after the run. The list is
//! bounded: one sample per user of the pool plus the repeats.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goose::prelude::*;
use serde_json::json;

use crate::Shared;
use crate::api::{Api, CouponStatus, Error};
use crate::fixture::{FlashSale, Member, concurrently};
use crate::report::{Checks, LatencyRow, print_latencies};
use crate::request::{self, ISSUE};

/// How long verification waits for `persisted == issued` once the load stopped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two reads of the coupon's counts while waiting for the writer.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Losers whose holdings are checked (all winners are).
const LOSER_SAMPLE: usize = 100;
/// A user whose pool is spent waits this long between two looks, making no request.
const IDLE: Duration = Duration::from_millis(500);

/// Every answer the virtual users got.
#[derive(Default)]
pub struct Stats {
    samples: Mutex<Vec<Sample>>,
}

/// Whether a user asks for the first time, or asks again right after winning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ask {
    First,
    Repeat,
}

/// What an ask was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// 201
    Issued,
    /// 409 ALREADY_ISSUED
    AlreadyIssued,
    /// 410 SOLD_OUT
    SoldOut,
    /// Any other status: not an answer the contract allows here.
    Unexpected(u16),
    /// No response at all (connection error, timeout): issued or not, nobody knows.
    NoResponse,
}

struct Sample {
    ask: Ask,
    outcome: Outcome,
    user_id: i64,
    micros: u64,
}

/// Goose session marker: this virtual user has found the pool spent and told goose so.
#[derive(Clone)]
struct PoolSpent;

/// The scenario's one transaction: ask for the coupon for the next fresh user, maybe ask again.
pub async fn issue(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let flash = shared.fixture()?.flash_sale.as_ref().ok_or_else(|| crate::missing("flash-sale"))?;
    let Some(member) = flash.users.take() else {
        return pool_spent(user).await;
    };
    let outcome = ask(user, &shared.flash_sale, flash.coupon_id, member, Ask::First).await?;
    if outcome == Outcome::Issued && rand::random_range(0..100) < shared.settings.flash_repeat_percent {
        ask(user, &shared.flash_sale, flash.coupon_id, member, Ask::Repeat).await?;
    }
    Ok(())
}

async fn ask(
    user: &mut GooseUser,
    stats: &Stats,
    coupon_id: i64,
    member: &Member,
    ask: Ask,
) -> Result<Outcome, Box<TransactionError>> {
    let path = format!("/api/v1/coupons/{coupon_id}/issue");
    let user_id = member.id;
    let answer = request::post(user, &path, &member.token, &json!({ "userId": user_id })).await?;
    let outcome = match answer.status {
        Some(201) => Outcome::Issued,
        Some(409) => Outcome::AlreadyIssued,
        Some(410) => Outcome::SoldOut,
        Some(status) => Outcome::Unexpected(status),
        None => Outcome::NoResponse,
    };
    let micros = answer.elapsed.as_micros() as u64;
    stats.samples.lock().expect("no panic while holding the samples").push(Sample { ask, outcome, user_id, micros });
    // 201, 409 and 410 are all answers of a working service; which one is right depends on the ask:
    // a first ask can never be a duplicate, a repeat never a win.
    let verdict = match (ask, outcome) {
        (Ask::First, Outcome::Issued) | (_, Outcome::SoldOut) | (Ask::Repeat, Outcome::AlreadyIssued) => Ok(()),
        (Ask::First, Outcome::AlreadyIssued) => Err("409 to a user's first ask".to_string()),
        (Ask::Repeat, Outcome::Issued) => Err("201 to a user already holding the coupon".to_string()),
        _ => Err(answer.describe()),
    };
    request::record(user, ISSUE, &answer, verdict).await?;
    Ok(outcome)
}

/// Every user of the pool has asked: this virtual user's sale is over.
async fn pool_spent(user: &mut GooseUser) -> TransactionResult {
    if user.get_session_data::<PoolSpent>().is_none() {
        user.set_session_data(PoolSpent);
        // Tell goose this user is done, exactly as goose's own users do after --iterations (they send
        // their thread number, which is weighted_users_index + 1). Once every user has, goose ends the
        // run, so a flash-sale-only run stops when the pool is spent instead of idling to --run-time;
        // in `mixed` the browsing users never do, and the run lasts its --run-time.
        if let Some(channel) = &user.shutdown_channel {
            let _ = channel.send(user.weighted_users_index + 1);
        }
    }
    tokio::time::sleep(IDLE).await;
    Ok(())
}

/// Prints the latency per outcome and checks the run; `true` when every check passed.
pub async fn verify(api: &Api, flash: &FlashSale, stats: &Stats, concurrency: usize) -> bool {
    let samples = std::mem::take(&mut *stats.samples.lock().expect("no panic while holding the samples"));
    print_outcome_latencies(&samples);

    let first: Vec<&Sample> = samples.iter().filter(|s| s.ask == Ask::First).collect();
    let repeats: Vec<&Sample> = samples.iter().filter(|s| s.ask == Ask::Repeat).collect();
    let users_of = |asks: &[&Sample], outcome: Outcome| -> Vec<i64> {
        asks.iter().filter(|s| s.outcome == outcome).map(|s| s.user_id).collect()
    };
    let winners = users_of(&first, Outcome::Issued);
    let losers = users_of(&first, Outcome::SoldOut);
    let first_409 = users_of(&first, Outcome::AlreadyIssued).len();
    let repeat_201 = users_of(&repeats, Outcome::Issued).len();
    let undecided = first.len() - winners.len() - losers.len() - first_409;
    let quantity = flash.quantity as usize;
    let expected = quantity.min(first.len());
    let total_201 = winners.len() + repeat_201;

    let mut checks = Checks::default();
    checks.check(
        "every user's ask was answered 201, 409 or 410",
        undecided == 0,
        format!("{undecided} of {} asks got another status or no response", first.len()),
    );
    checks.check(
        format!("min(Q, users who asked) = min({quantity}, {}) = {expected} users won", first.len()),
        winners.len() == expected,
        format!("{} first asks got 201, {} got 410", winners.len(), losers.len()),
    );
    checks.check("no user's first ask was answered 409", first_409 == 0, format!("{first_409} were"));
    checks.check(
        "no repeat by a winner was issued again",
        repeat_201 == 0,
        format!("{} repeats, {repeat_201} got 201", repeats.len()),
    );

    match drained(api, flash.coupon_id).await {
        Ok((status, waited)) => {
            checks.check(
                "server's `issued` equals the 201s the users got",
                status.issued == total_201 as i64,
                format!("issued {}, 201s {total_201}", status.issued),
            );
            checks.check(
                "totalQuantity - issued = remaining",
                status.total_quantity == quantity as i64 && status.remaining == status.total_quantity - status.issued,
                format!("{} - {} = {}", status.total_quantity, status.issued, status.remaining),
            );
            checks.check(
                format!("writer drains: persisted == issued within {}s", DRAIN_DEADLINE.as_secs()),
                status.persisted == status.issued,
                format!("persisted {} of {} after {:.1}s", status.persisted, status.issued, waited.as_secs_f64()),
            );
        }
        Err(e) => checks.check("the coupon's counts can be read", false, e),
    }

    let sample: Vec<i64> = losers.iter().copied().take(LOSER_SAMPLE).collect();
    match wrong_holdings(api, flash.coupon_id, &winners, &sample, concurrency).await {
        Ok(wrong) => checks.check(
            format!(
                "each of the {} winners holds the coupon once, none of {} losers holds it",
                winners.len(),
                sample.len()
            ),
            wrong.is_empty(),
            describe_wrong(&wrong),
        ),
        Err(e) => checks.check("the users' coupons can be listed", false, e),
    }
    checks.print(&format!("flash-sale verification (coupon {})", flash.coupon_id))
}

fn print_outcome_latencies(samples: &[Sample]) {
    let mut rows: BTreeMap<(Ask, Outcome), Vec<u64>> = BTreeMap::new();
    for sample in samples {
        rows.entry((sample.ask, sample.outcome)).or_default().push(sample.micros);
    }
    let rows = rows
        .into_iter()
        .map(|((ask, outcome), micros)| {
            let ask = match ask {
                Ask::First => "first ask",
                Ask::Repeat => "repeat",
            };
            let outcome = match outcome {
                Outcome::Issued => "201 issued".to_string(),
                Outcome::AlreadyIssued => "409 already issued".to_string(),
                Outcome::SoldOut => "410 sold out".to_string(),
                Outcome::Unexpected(status) => format!("{status} unexpected"),
                Outcome::NoResponse => "no response".to_string(),
            };
            LatencyRow { label: format!("{ask}: {outcome}"), micros }
        })
        .collect();
    print_latencies("flash-sale: POST /coupons/{id}/issue latency by outcome (time to first byte)", rows);
}

/// Waits until the writer has persisted every issuance, or the deadline passes; the last counts read.
async fn drained(api: &Api, coupon_id: i64) -> Result<(CouponStatus, Duration), Error> {
    let started = Instant::now();
    loop {
        let status = api.coupon_status(coupon_id).await?;
        if status.persisted == status.issued || started.elapsed() >= DRAIN_DEADLINE {
            return Ok((status, started.elapsed()));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Users whose holdings of the coupon are wrong: (user, times held, times expected).
async fn wrong_holdings(
    api: &Api,
    coupon_id: i64,
    winners: &[i64],
    losers: &[i64],
    concurrency: usize,
) -> Result<Vec<(i64, usize, usize)>, Error> {
    let expectations: Vec<(i64, usize)> =
        winners.iter().map(|&user| (user, 1)).chain(losers.iter().map(|&user| (user, 0))).collect();
    let held = concurrently(expectations.len(), concurrency, |i| {
        let (user, _) = expectations[i];
        async move { api.held_count(user, coupon_id).await }
    })
    .await?;
    Ok(expectations
        .iter()
        .zip(held)
        .filter(|((_, expected), held)| held != expected)
        .map(|(&(user, expected), held)| (user, held, expected))
        .collect())
}

fn describe_wrong(wrong: &[(i64, usize, usize)]) -> String {
    if wrong.is_empty() {
        return "all as expected".to_string();
    }
    let examples: Vec<String> = wrong
        .iter()
        .take(5)
        .map(|(user, held, expected)| format!("user {user} holds it {held}x, expected {expected}x"))
        .collect();
    format!("{} users wrong, e.g. {}", wrong.len(), examples.join("; "))
}
