//! Where order events go: `POST` to `DATA_PLATFORM_URL`, or, without one, a log line.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;

use super::OrderEvent;

/// A delivery that has not been answered within this counts as failed and is retried later; it bounds how
/// long the relay holds its batch.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to open a connection to the platform.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the data platform answered {0}")]
    Status(reqwest::StatusCode),
}

/// The destination of order events.
#[derive(Debug, Clone)]
pub enum Sink {
    /// `POST` the event JSON; only a 2xx counts as delivered.
    Http { client: reqwest::Client, url: String },
    /// No platform configured: the event is logged and counts as delivered.
    Log,
}

impl Sink {
    /// The HTTP sink for `url`, or the log sink without one.
    pub fn new(url: Option<&str>) -> Self {
        match url {
            Some(url) => Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(DELIVERY_TIMEOUT)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build()
                    .expect("a plain reqwest client builds"),
                url: url.to_owned(),
            },
            None => Sink::Log,
        }
    }

    /// Delivers `payload`, the stored JSON of `event`, sent byte for byte as written at payment.
    pub async fn deliver(&self, event: &OrderEvent, payload: &str) -> Result<(), DeliveryError> {
        match self {
            Sink::Http { client, url } => {
                let response =
                    client.post(url).header(CONTENT_TYPE, "application/json").body(payload.to_owned()).send().await?;
                if response.status().is_success() { Ok(()) } else { Err(DeliveryError::Status(response.status())) }
            }
            Sink::Log => {
                tracing::info!(event.id = %event.event_id, order.id = %event.order_id, payload, "order event (log sink)");
                Ok(())
            }
        }
    }
}
