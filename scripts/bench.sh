#!/usr/bin/env bash
# svsettle benchmarks: builds the release binary and the harness (benches/bench.rs),
# then runs every workload against its baseline in the same run, in temporary roots.
# Prints one table and writes it as JSON (target/bench/latest.json by default).
#
#   scripts/bench.sh                 everything (P1-P5, peak memory; ~6 min on 2 cores)
#   scripts/bench.sh --quick         fewer runs, no 10,000-service growth step
#   scripts/bench.sh --only P2,P3    some workloads (P1 P2 P3 P4 P5 MEM)
#   scripts/bench.sh --runs 9        runs per figure (medians; default 7, --quick 3)
#   scripts/bench.sh --bin PATH      benchmark another svsettle binary (e.g. an older build)
#   scripts/bench.sh --json FILE     where to write the JSON
#
# Needs s6, sqlite3, rsync, time (scripts/setup.sh installs the first three); P5 needs s6-rc
# (../shared/tools/build-test-tools.sh), else its row says "not available".
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$here"
exec cargo bench --quiet --bench bench -- "$@"
