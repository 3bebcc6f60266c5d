#!/usr/bin/env bash
# The test command, the same for a new machine and for CI: installs what the tests need when it
# is missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets "$@"
