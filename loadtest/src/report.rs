//! What the load test prints after the run: pass/fail checks and latency tables of its own samples.

use std::fmt::Display;

/// A list of named checks, printed as PASS/FAIL lines.
#[derive(Default)]
pub struct Checks {
    results: Vec<(String, bool, String)>,
}

impl Checks {
    /// Records a check: `what` should hold; `detail` says what was seen.
    pub fn check(&mut self, what: impl Display, holds: bool, detail: impl Display) {
        self.results.push((what.to_string(), holds, detail.to_string()));
    }

    /// Prints every check under `title`; `true` when all passed.
    pub fn print(&self, title: &str) -> bool {
        println!("\n{title}");
        for (what, holds, detail) in &self.results {
            let verdict = if *holds { "PASS" } else { "FAIL" };
            println!("  {verdict}  {what}: {detail}");
        }
        let passed = self.results.iter().all(|(_, holds, _)| *holds);
        println!("  => {}", if passed { "all checks passed" } else { "VERIFICATION FAILED" });
        passed
    }
}

/// One row of a latency table: a label and its samples in microseconds.
pub struct LatencyRow {
    pub label: String,
    pub micros: Vec<u64>,
}

/// Prints count, p50, p90, p99 and max per row, in milliseconds (nearest-rank percentiles).
pub fn print_latencies(title: &str, mut rows: Vec<LatencyRow>) {
    println!("\n{title}");
    println!("  {:<36} {:>8} {:>9} {:>9} {:>9} {:>9}", "outcome", "count", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for row in rows.iter_mut().filter(|row| !row.micros.is_empty()) {
        row.micros.sort_unstable();
        let ms = |q: f64| {
            let rank = ((q * row.micros.len() as f64).ceil() as usize).clamp(1, row.micros.len());
            row.micros[rank - 1] as f64 / 1000.0
        };
        println!(
            "  {:<36} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            row.label,
            row.micros.len(),
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(1.0)
        );
    }
}
