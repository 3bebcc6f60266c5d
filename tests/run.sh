#!/usr/bin/env bash
# The test command, the same for a new machine and for CI: installs what the tests need when it
# is missing (redis-server, for the idempotency tests against a real Redis), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
    echo "tests/run.sh: installing redis-server" >&2
    apt_get() { if [ "$(id -u)" -eq 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends redis-server >/dev/null
fi

cargo test --locked --all-targets "$@"
