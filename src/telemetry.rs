//! Logs (tracing, text or JSON) and the process-wide Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Latency buckets in seconds: fine below 10 ms, where the coupon path lives.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// How often histograms are compacted; without the exporter's HTTP listener nobody else does it.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Installs the tracing subscriber (`RUST_LOG`, default `info`).
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The Prometheus recorder, installed on first use. It is global because `metrics` macros are; tests that
/// run several apps in one process share it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        let upkeep = handle.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_PERIOD);
                upkeep.run_upkeep();
            }
        });
        handle
    })
}
