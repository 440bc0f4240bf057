# Reads figures out of a `wrk --latency` report on standard input; sourced by loadtest/compare-*.sh.

# Requests per second, as a whole number.
requests_per_second() { awk '/^Requests\/sec:/ { printf "%d", $2 }'; }

# The 99th percentile latency, as wrk prints it (e.g. `6.15ms`).
p99() { awk '$1 == "99%" { print $2 }'; }
