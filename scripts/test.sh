#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then checks
# formatting and lints, and runs the unit and integration tests against the real
# supervisors (s6, runit, s6-rc) and package managers (pacman).
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$here"
bash scripts/setup.sh
eval "$(bash ../shared/tools/build-test-tools.sh --print-env)"
features=failpoints,alpm
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --features "$features" -- -D warnings
echo "== cargo test"
cargo test --features "$features" -- --test-threads="${SVSETTLE_TEST_THREADS:-4}"
