#!/usr/bin/env bash
# bench/outbox.sh: the outbox's numbers, embedded (SQLite) and on Redis side by side, in one run.
#
#   bash bench/outbox.sh
#
# What runs (all on 127.0.0.1, free ports, nothing else is contacted):
#   fake   nginx answering Qikchat's success document to POST /v1/messages (bench/fake.sh), 1
#          worker, with an access log of one line per send: `$msec` (arrival, ms resolution).
#   relay  qikchat-relay, release build of this working tree, default settings (a batch has its
#          own body limit), once with its outbox in RELAY_DATA_DIR (SQLite) and once on a local
#          redis-server (appendonly, fsync every second, as one would run it). A fresh data directory and an
#          empty Redis for every start.
# For each of the two:
#   batch    OUTBOX_BATCH_ROUNDS `POST /messages/batch` of OUTBOX_BATCH messages, one after the
#            other: messages accepted per second (median round). The messages are due at once:
#            the worker drains them to the fake meanwhile, as it would in production.
#   one      OUTBOX_ONE `POST /messages`, one message each, over OUTBOX_CONNS keep-alive
#            connections (bench/outbox.py, a Python client: it may be the limit, see its CPU).
#   drain    a relay whose account has `rate_per_second = OUTBOX_RATE`: one batch of
#            OUTBOX_DRAIN messages; the sends' arrival times at the fake give the pace after the
#            burst (the rate is also the burst), to compare with the configured rate.
#   latency  OUTBOX_SCHEDULED messages with one `send_at` 3 s ahead: from `send_at` to each
#            arrival at the fake (p50, max; a negative one would be a send before `send_at`).
# Then one markdown table (stdout, and OUTBOX_OUT when set); raw numbers in the scratch directory
# (kept with BENCH_KEEP=1).
#
# CPU layout (BENCH_PIN=1, the default, needs 2 CPUs): the relay on CPU A; the fake, Redis and the
# load on CPU B. BENCH_PIN=0 pins nothing.
#
# Environment: OUTBOX_BATCH=1000 OUTBOX_BATCH_ROUNDS=3 OUTBOX_ONE=2000 OUTBOX_CONNS=4
#   OUTBOX_RATE=50 OUTBOX_DRAIN=500 OUTBOX_SCHEDULED=20 OUTBOX_MODES="embedded redis"
#   BENCH_RELAY_BIN (a built relay instead of building the working tree), CARGO_TARGET_DIR
#   (default bench/target), BENCH_PIN, BENCH_KEEP, OUTBOX_OUT.
# A full run takes about a minute after the build.
#
# Needs: bash, python3, curl, redis-server, redis-cli; nginx is installed with apt when missing
# (root).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

BATCH=${OUTBOX_BATCH:-1000}
BATCH_ROUNDS=${OUTBOX_BATCH_ROUNDS:-3}
ONE=${OUTBOX_ONE:-2000}
CONNS=${OUTBOX_CONNS:-4}
RATE=${OUTBOX_RATE:-50}
DRAIN=${OUTBOX_DRAIN:-500}
SCHEDULED=${OUTBOX_SCHEDULED:-20}
read -r -a MODES <<< "${OUTBOX_MODES:-embedded redis}"
PIN=${BENCH_PIN:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_DIR/target}

START=$SECONDS
log() { printf '[outbox %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}

for n in BATCH BATCH_ROUNDS ONE CONNS RATE DRAIN SCHEDULED; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "OUTBOX_$n must be a positive integer (got '${!n}')"
done
((BATCH <= 1000)) || die "OUTBOX_BATCH is at most 1000 (the batch limit)"
((DRAIN > RATE)) || die "OUTBOX_DRAIN must be larger than OUTBOX_RATE (the burst)"
for mode in "${MODES[@]}"; do
    [[ $mode == embedded || $mode == redis ]] || die "OUTBOX_MODES: embedded and/or redis (got $mode)"
done

# ---------------------------------------------------------------------------------------------
# Tools, binary
# ---------------------------------------------------------------------------------------------
command -v python3 > /dev/null || die "python3 is needed"
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
command -v curl > /dev/null || die "curl is needed"
if [[ " ${MODES[*]} " == *" redis "* ]]; then
    command -v redis-server > /dev/null && command -v redis-cli > /dev/null ||
        die "redis-server and redis-cli are needed (apt-get install redis-server), or OUTBOX_MODES=embedded"
fi
if ! command -v nginx > /dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    [[ $(id -u) -eq 0 ]] || die "nginx is missing; run as root or apt-get install nginx-light"
    log "installing nginx-light with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends nginx-light > /dev/null 2>&1 ||
        { apt-get update > /dev/null && apt-get install -y --no-install-recommends nginx-light > /dev/null; } ||
        die "apt-get install nginx-light failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -n ${BENCH_RELAY_BIN:-} ]]; then
    relay_bin=$BENCH_RELAY_BIN
    [[ -x $relay_bin ]] || die "BENCH_RELAY_BIN=$relay_bin is not an executable"
    relay_from="the binary $relay_bin (BENCH_RELAY_BIN)"
else
    log "building the relay (release profile, working tree) into $CARGO_TARGET_DIR"
    (cd "$REPO" && cargo build --release --quiet --bin qikchat-relay) || die "cargo build failed"
    relay_bin=$CARGO_TARGET_DIR/release/qikchat-relay
    relay_from="$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2> /dev/null || echo ' with uncommitted changes') (release profile)"
fi

# ---------------------------------------------------------------------------------------------
# Scratch space, cleanup, CPU layout, ports
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/qikchat-outbox-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
stop_pid() { # $1: pid. SIGTERM, then SIGKILL after 35 s (the relay's drain timeout is 30 s).
    kill -TERM "$1" 2> /dev/null || return 0
    for _ in $(seq 350); do
        kill -0 "$1" 2> /dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2> /dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a CPUS < <("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
if [[ $PIN == 1 && ${#CPUS[@]} -ge 2 ]]; then
    ON_RELAY=(taskset -c "${CPUS[0]}")
    ON_LOAD=(taskset -c "${CPUS[1]}")
    layout="pinned: the relay on CPU ${CPUS[0]}; the fake, Redis and the load on CPU ${CPUS[1]}"
else
    ON_RELAY=()
    ON_LOAD=()
    layout="not pinned: ${#CPUS[@]} CPUs shared by everything"
fi
log "CPU layout: $layout"

# shellcheck source=bench/fake.sh
source "$BENCH_DIR/fake.sh"
read -r FAKE_PORT RELAY_PORT REDIS_PORT < <(free_ports 3)
RELAY=http://127.0.0.1:$RELAY_PORT
FAKE_LOG=$WORK/fake/access.log

# ---------------------------------------------------------------------------------------------
# The fake Qikchat, with a log line per send; Redis
# ---------------------------------------------------------------------------------------------
mkdir -p "$WORK/fake" "$WORK/redis" "$WORK/relay"
{
    nginx_common "$WORK/fake" 1
    cat << EOF
http {
$(nginx_temp_paths "$WORK/fake")
    log_format sends '\$msec \$status';
    access_log $FAKE_LOG sends;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$FAKE_PORT backlog=4096;
        location = /v1/messages {
            default_type application/json;
            return 200 '$FAKE_ANSWER';
        }
        location / {
            access_log off;
            return 404;
        }
    }
}
EOF
} > "$WORK/fake/nginx.conf"
"$NGINX" -t -q -p "$WORK/fake" -c "$WORK/fake/nginx.conf" -e "$WORK/fake/error.log" ||
    die "the fake's nginx configuration is invalid"
"${ON_LOAD[@]}" "$NGINX" -p "$WORK/fake" -c "$WORK/fake/nginx.conf" -e "$WORK/fake/error.log" \
    -g 'daemon off;' &
PIDS+=($!)

if [[ " ${MODES[*]} " == *" redis "* ]]; then
    "${ON_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
        --save '' --appendonly yes --appendfsync everysec > "$WORK/redis/redis.log" 2>&1 &
    PIDS+=($!)
fi

wait_http() { # $1: url, $2: what
    local i
    for i in $(seq 200); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2> /dev/null && return 0
        sleep 0.05
    done
    die "$2 did not come up ($1)"
}
for i in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "http://127.0.0.1:$FAKE_PORT/v1/messages") == 200 ]] && break
    ((i < 100)) || die "the fake did not come up"
    sleep 0.05
done
: > "$FAKE_LOG"

# ---------------------------------------------------------------------------------------------
# The relay
# ---------------------------------------------------------------------------------------------
cat > "$WORK/callers-unpaced.toml" << EOF
[clients.bench]
token = "$TOKEN"
EOF
cat > "$WORK/callers-paced.toml" << EOF
[accounts.default]
rate_per_second = $RATE

[clients.bench]
token = "$TOKEN"
EOF

STARTS=0
relay_pid=''
start_relay() { # $1: mode, $2: callers file
    STARTS=$((STARTS + 1))
    local data=$WORK/data-$STARTS extra=()
    mkdir -p "$data"
    if [[ $1 == redis ]]; then
        redis-cli -p "$REDIS_PORT" flushall > /dev/null || die "redis-cli flushall failed"
        extra=("RELAY_REDIS_URL=redis://127.0.0.1:$REDIS_PORT")
    fi
    "${ON_RELAY[@]}" env -i "PATH=$PATH" "QIKCHAT_API_KEY=$KEY" \
        "QIKCHAT_BASE_URL=http://127.0.0.1:$FAKE_PORT" "RELAY_CLIENTS_FILE=$2" \
        "RELAY_LISTEN_ADDR=127.0.0.1:$RELAY_PORT" "RELAY_DATA_DIR=$data" \
        "${extra[@]}" "$relay_bin" \
        >> "$WORK/relay/stdout-$STARTS.log" 2> "$WORK/relay/stderr-$STARTS.log" &
    relay_pid=$!
    PIDS+=("$relay_pid")
    wait_http "$RELAY/readyz" "the relay ($1)"
    code=$(curl -sS -o "$WORK/answer" -w '%{http_code}' -X POST "$RELAY/messages" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"to\":\"+918080808080\",\"type\":\"text\",\"text\":\"warm-up\",\"send_at\":\"$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)\"}")
    [[ $code == 202 ]] || die "POST /messages answered $code: $(cat "$WORK/answer") (has the outbox landed?)"
}
stop_relay() {
    stop_pid "$relay_pid"
}

RESULTS=$WORK/results.jsonl
record() { # $1: mode, $2: kind, $3: a JSON object
    printf '{"mode":"%s","kind":"%s",%s\n' "$1" "$2" "${3#\{}" >> "$RESULTS"
}
printf '{"kind":"meta","batch":%d,"rounds":%d,"one":%d,"conns":%d,"rate":%d,"scheduled":%d}\n' \
    "$BATCH" "$BATCH_ROUNDS" "$ONE" "$CONNS" "$RATE" "$SCHEDULED" > "$RESULTS"
load() { "${ON_LOAD[@]}" "$PYTHON" "$BENCH_DIR/outbox.py" "$@"; }
lines() { wc -l < "$FAKE_LOG"; }

# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
for mode in "${MODES[@]}"; do
    log "$mode: acceptance, $BATCH_ROUNDS batches of $BATCH, then $ONE one by one over $CONNS connections"
    start_relay "$mode" "$WORK/callers-unpaced.toml"
    out=$(load batch --url "$RELAY" --token "$TOKEN" --size "$BATCH" --rounds "$BATCH_ROUNDS" \
        --tag "$mode-batch") || die "$mode: the batches failed"
    record "$mode" batch "$out"
    log "$mode: batch $out"
    out=$(load one --url "$RELAY" --token "$TOKEN" --count "$ONE" --conns "$CONNS" \
        --tag "$mode-one") || die "$mode: the single sends failed"
    record "$mode" one "$out"
    log "$mode: one by one $out"
    stop_relay

    log "$mode: drain of $DRAIN at rate_per_second = $RATE, then $SCHEDULED scheduled 3 s ahead"
    start_relay "$mode" "$WORK/callers-paced.toml"
    skip=$(lines)
    load batch --url "$RELAY" --token "$TOKEN" --size "$DRAIN" --rounds 1 --tag "$mode-drain" \
        > /dev/null || die "$mode: the drain's batch failed"
    load arrivals --log "$FAKE_LOG" --skip "$skip" --count "$DRAIN" \
        --within-s $((DRAIN / RATE + 60)) > "$WORK/$mode-drain.txt" || die "$mode: the drain did not finish"
    out=$(load drain --arrivals "$WORK/$mode-drain.txt" --rate "$RATE")
    record "$mode" drain "$out"
    log "$mode: drain $out"
    skip=$(lines)
    send_at=$(load schedule --url "$RELAY" --token "$TOKEN" --count "$SCHEDULED" --in-s 3) ||
        die "$mode: scheduling failed"
    load arrivals --log "$FAKE_LOG" --skip "$skip" --count "$SCHEDULED" --within-s 30 \
        > "$WORK/$mode-latency.txt" || die "$mode: the scheduled messages did not arrive"
    out=$(load latency --arrivals "$WORK/$mode-latency.txt" --send-at "$send_at")
    record "$mode" latency "$out"
    log "$mode: send_at latency $out"
    stop_relay
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
report=$WORK/report.md
{
    echo "## Outbox ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Relay: $relay_from. $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), ${#CPUS[@]} CPUs; $layout."
    echo "Fake Qikchat: nginx (bench/fake.sh). Redis: local redis-server, appendonly, fsync every second."
    echo
    "$PYTHON" "$BENCH_DIR/outbox.py" table "$RESULTS"
} > "$report"
cat "$report"
[[ -n ${OUTBOX_OUT:-} ]] && cp "$report" "$OUTBOX_OUT"
log "done in $((SECONDS - START)) s"
