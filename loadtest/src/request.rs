//! Requests made by virtual users, recorded in goose's report, one row per route.
//!
//! GETs go through goose as usual: any non-2xx is a failure there. The POSTs have answers that are
//! right although not 2xx (409 and 410 when issuing a coupon, 409 OUT_OF_STOCK once the stock is gone),
//! and goose judges a request, and puts every non-2xx in its errors table, before the load test can
//! look at the answer: `set_success` afterwards fixes the counts but leaves the error listed. So a POST
//! is sent with the user's own client ([`post`]), judged by the scenario, and then recorded with goose's
//! `record_custom_request_duration` under the method `POST` and the route's name ([`record`]): the
//! report's rows, status codes, graphs and errors table then say what the scenario decided. It keeps
//! goose's request throttle and coordinated-omission handling; its time is to the first byte, as goose
//! measures its own requests.

use std::time::{Duration, Instant};

use goose::goose::GooseResponse;
use goose::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Report names, one per route (goose puts the method in front): ids in paths would otherwise make
/// one row per id.
pub const ISSUE: &str = "/coupons/{id}/issue";
pub const CHARGE: &str = "/users/{id}/balance/charge";
pub const CREATE_ORDER: &str = "/orders";
pub const PAY: &str = "/orders/{id}/pay";
pub const PRODUCTS: &str = "/products";
pub const PRODUCT: &str = "/products/{id}";
pub const TOP: &str = "/products/top";

/// The answer to a POST, body read in full.
pub struct Answer {
    /// `None` when no response came (connection error, timeout).
    pub status: Option<u16>,
    body: Vec<u8>,
    /// Time to the response's first byte.
    pub elapsed: Duration,
    /// Why no response came.
    transport_error: Option<String>,
}

impl Answer {
    /// The contract's error `code`, if the body is the error envelope.
    pub fn error_code(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct ErrorBody {
            code: String,
        }
        serde_json::from_slice::<ErrorBody>(&self.body).ok().map(|body| body.code)
    }

    /// The body decoded, or a verdict saying it does not match the contract.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body does not match the contract: {e}"))
    }

    /// `Ok` when the status is one of `expected`, else a verdict naming what came instead.
    pub fn expect(&self, expected: &[u16]) -> Result<(), String> {
        match self.status {
            Some(status) if expected.contains(&status) => Ok(()),
            _ => Err(self.describe()),
        }
    }

    /// The status and error code, or why there was no response, for the errors table.
    pub fn describe(&self) -> String {
        match (self.status, &self.transport_error) {
            (Some(status), _) => {
                format!("{status} {}", self.error_code().as_deref().unwrap_or("")).trim_end().to_string()
            }
            (None, Some(error)) => format!("no response: {error}"),
            (None, None) => "no response".to_string(),
        }
    }
}

/// POSTs `body` as JSON to `path` (relative to the host) with the user's client and `token` (the acting
/// user's), after goose's request throttle (`--throttle-requests`) lets it through; nothing is recorded
/// until [`record`].
pub async fn post(
    user: &mut GooseUser,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<Answer, Box<TransactionError>> {
    if user.is_throttled
        && let Some(throttle) = &user.throttle
    {
        throttle.send_async(true).await.map_err(|e| Box::new(TransactionError::from(e)))?;
    }
    let url = user.build_url(path)?;
    let started = Instant::now();
    let response = user.client.post(url).bearer_auth(token).json(body).send().await;
    let elapsed = started.elapsed();
    Ok(match response {
        Ok(response) => {
            let status = Some(response.status().as_u16());
            match response.bytes().await {
                Ok(body) => Answer { status, body: body.to_vec(), elapsed, transport_error: None },
                Err(e) => Answer { status: None, body: Vec::new(), elapsed, transport_error: Some(e.to_string()) },
            }
        }
        Err(e) => Answer { status: None, body: Vec::new(), elapsed, transport_error: Some(e.to_string()) },
    })
}

/// Records `answer` under `POST name` with the scenario's verdict; a failed verdict also fails the
/// transaction, ending the user's flow for this iteration.
pub async fn record(
    user: &mut GooseUser,
    name: &str,
    answer: &Answer,
    verdict: Result<(), String>,
) -> TransactionResult {
    let error = verdict.as_ref().err().map(String::as_str);
    user.record_custom_request_duration("POST", name, answer.elapsed, verdict.is_ok(), answer.status, error).await?;
    verdict.map_err(|why| Box::new(TransactionError::Custom(why)))
}

/// `Ok` when goose counted the GET a success, else the transaction fails with it.
pub fn succeeded(goose: &GooseResponse) -> TransactionResult {
    if goose.request.success {
        Ok(())
    } else {
        Err(Box::new(TransactionError::RequestFailed { raw_request: Box::new(goose.request.clone()) }))
    }
}
