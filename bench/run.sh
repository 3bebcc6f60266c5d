#!/usr/bin/env bash
# bench/run.sh: qikchat-relay against nginx doing the same job, side by side, on this machine.
#
#   bash bench/run.sh
#
# What runs (all on 127.0.0.1, free ports, nothing else is contacted):
#   fake   nginx answering Qikchat's success document to POST /v1/messages (1 worker, no access
#          log): the upstream, fast enough never to be the bottleneck.
#   nginx  the alternative: nginx as a header-injecting proxy (1 worker, access log on, one line
#          per request): POST /send -> fake /v1/messages with `QIKCHAT-API-KEY` set, keep-alive to
#          the fake (upstream keepalive pool), the body passed on as-is, the answer passed back.
#   relay  qikchat-relay in its default configuration (JSON log line per request to a file),
#          release build of this working tree: auth (SHA-256, constant time), validation,
#          translation to Qikchat's envelope, keep-alive to the fake, answer {"id","status"}.
# Load: wrk, one thread, keep-alive, the same POST /send request (bench/send.lua) for every target.
#
# CPU layout (BENCH_PIN=1, the default, needs 2 CPUs): the proxy under test (nginx or the relay)
# gets CPU A to itself; wrk and the fake share CPU B. Both proxies thus get exactly one core; the
# relay's tokio runtime sees one CPU and starts one worker thread (its default: one per CPU it
# may use). BENCH_PIN=0 pins nothing and gives nginx as many workers as there are CPUs.
#
# Each round runs, for every target, in alternating order (odd rounds nginx first, even rounds
# the relay first) so that machine drift hits both:
#   thr     throughput: BENCH_CONNS connections, as fast as possible, BENCH_DURATION seconds;
#   lat1    one connection, one request at a time, BENCH_LAT_DURATION seconds;
#   paced   BENCH_PACED_CONNS connections, each waiting BENCH_PACE_MS ms between requests
#           (moderate load, well below saturation), BENCH_LAT_DURATION seconds.
# The fake is measured directly in every round too: latency "added" is a proxy's minus the fake's.
# Then: peak RSS (VmHWM) of each proxy over the whole run, time from exec to ready (repeated
# starts), binary size, and the image size when a built image is found.
#
# Environment (defaults give a full run of about 4 minutes after the build):
#   BENCH_ROUNDS=5 BENCH_DURATION=8 BENCH_LAT_DURATION=4 BENCH_CONNS=64 BENCH_PACED_CONNS=8
#   BENCH_PACE_MS=1 BENCH_READY_RUNS=15 BENCH_PIN=1
#   BENCH_RELAY_BIN use this relay binary instead of building the working tree
#   CARGO_TARGET_DIR  where the relay is built (default bench/target, apart from the usual target/)
#   BENCH_OUT       the markdown report (default bench/results.md); raw data goes next to it
#                   (bench/results/ by default: BENCH_RAW_DIR)
#   BENCH_IMAGE     image whose size is reported (default localhost/qikchat-relay:ci, the one
#                   deploy/test-image.sh builds; looked up with docker, then podman)
#   BENCH_KEEP=1    keep the scratch directory (configs, logs) for inspection
#
# Needs: bash, python3, curl, taskset; nginx and wrk are installed with apt when missing (root).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-8}
LAT_DURATION=${BENCH_LAT_DURATION:-4}
CONNS=${BENCH_CONNS:-64}
PACED_CONNS=${BENCH_PACED_CONNS:-8}
PACE_MS=${BENCH_PACE_MS:-1}
READY_RUNS=${BENCH_READY_RUNS:-15}
PIN=${BENCH_PIN:-1}
OUT=${BENCH_OUT:-$BENCH_DIR/results.md}
RAW_DIR=${BENCH_RAW_DIR:-$BENCH_DIR/results}
IMAGE=${BENCH_IMAGE:-localhost/qikchat-relay:ci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_DIR/target}

START=$SECONDS
log() { printf '[bench %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}

for n in ROUNDS DURATION LAT_DURATION CONNS PACED_CONNS PACE_MS READY_RUNS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$n must be a positive integer (got '${!n}')"
done
((DURATION <= 120 && LAT_DURATION <= 120 && ROUNDS <= 50)) || die "durations <= 120 s, rounds <= 50"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
command -v python3 > /dev/null || die "python3 is needed"
# The interpreter itself, not a shim: it is also run with a cleared environment (env -i).
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
missing=()
command -v nginx > /dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v wrk > /dev/null || missing+=(wrk)
command -v curl > /dev/null || missing+=(curl)
command -v taskset > /dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root or install them (apt-get install ${missing[*]})"
    log "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null 2>&1 ||
        { apt-get update > /dev/null && apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null; } ||
        die "apt-get install ${missing[*]} failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# The script's own variables for the relay are in lower case, and its input is BENCH_RELAY_BIN: a
# RELAY_ variable that is not a setting stops the relay (docs/configuration.md).
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
WORK=$(mktemp -d /tmp/qikchat-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2> /dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2> /dev/null || true
    done
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
    PROXY_CPU=${CPUS[0]}
    LOAD_CPU=${CPUS[1]}
    ON_PROXY=(taskset -c "$PROXY_CPU")
    ON_LOAD=(taskset -c "$LOAD_CPU")
    PROXY_WORKERS=1
    layout="pinned: proxy under test on CPU $PROXY_CPU; wrk and the fake on CPU $LOAD_CPU"
else
    [[ $PIN == 1 ]] && log "only ${#CPUS[@]} CPU: nothing pinned"
    PIN=0
    PROXY_CPU=''
    LOAD_CPU=''
    ON_PROXY=()
    ON_LOAD=()
    PROXY_WORKERS=${#CPUS[@]}
    layout="not pinned: ${#CPUS[@]} CPUs shared by everything; nginx proxy with $PROXY_WORKERS workers"
fi
log "CPU layout: $layout"

# shellcheck source=bench/fake.sh
source "$BENCH_DIR/fake.sh"
read -r FAKE_PORT NGINX_PORT relay_port READY_PORT < <(free_ports 4)
export BENCH_BODY='{"to":"+918080808080","type":"text","text":"Your OTP is 4711"}'

# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------
mkdir -p "$WORK/fake" "$WORK/nginx" "$WORK/ready" "$WORK/relay"
fake_conf "$WORK/fake" "$FAKE_PORT" > "$WORK/fake/nginx.conf"

proxy_conf() { # $1: directory, $2: port
    nginx_common "$1" "$PROXY_WORKERS"
    cat << EOF
http {
$(nginx_temp_paths "$1")
    access_log $1/access.log combined;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_max_body_size 64k;
    upstream qikchat {
        server 127.0.0.1:$FAKE_PORT;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location = /send {
            proxy_pass http://qikchat/v1/messages;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header QIKCHAT-API-KEY "$KEY";
        }
        location = /healthz {
            return 200 'ok';
        }
    }
}
EOF
}
proxy_conf "$WORK/nginx" "$NGINX_PORT" > "$WORK/nginx/nginx.conf"
proxy_conf "$WORK/ready" "$READY_PORT" > "$WORK/ready/nginx.conf"

relay_env=(env -i "PATH=$PATH" "QIKCHAT_API_KEY=$KEY" "QIKCHAT_BASE_URL=http://127.0.0.1:$FAKE_PORT"
    "RELAY_CLIENTS=bench:$TOKEN")

# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------
wait_http() { # $1: url, $2: what
    local i
    for i in $(seq 200); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2> /dev/null && return 0
        sleep 0.05
    done
    die "$2 did not come up ($1)"
}

"$NGINX" -t -q -p "$WORK/fake" -c "$WORK/fake/nginx.conf" -e "$WORK/fake/error.log" ||
    die "the fake's nginx configuration is invalid"
"${ON_LOAD[@]}" "$NGINX" -p "$WORK/fake" -c "$WORK/fake/nginx.conf" -e "$WORK/fake/error.log" \
    -g 'daemon off;' &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
"${ON_PROXY[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
    -g 'daemon off;' &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
"${ON_PROXY[@]}" "${relay_env[@]}" "RELAY_LISTEN_ADDR=127.0.0.1:$relay_port" "$relay_bin" \
    >> "$WORK/relay/stdout.log" 2> "$WORK/relay/stderr.log" &
relay_pid=$!
PIDS+=("$relay_pid")

wait_http "http://127.0.0.1:$NGINX_PORT/healthz" "the nginx proxy"
wait_http "http://127.0.0.1:$relay_port/healthz" "the relay"
log "fake :$FAKE_PORT, nginx :$NGINX_PORT, relay :$relay_port (pid $relay_pid) are up"

# Each proxy does the job before it is timed: 200 with the id, and the relay still says no.
post() { # $1: url, rest: curl args
    local url=$1
    shift
    curl -sS --max-time 5 -o "$WORK/answer" -w '%{http_code}' -X POST "$url" \
        -H 'Content-Type: application/json' -d "$BENCH_BODY" "$@"
}
code=$(post "http://127.0.0.1:$FAKE_PORT/v1/messages")
[[ $code == 200 ]] || die "the fake answered $code"
code=$(post "http://127.0.0.1:$NGINX_PORT/send" -H "Authorization: Bearer $TOKEN")
[[ $code == 200 ]] && grep -q 52JH6WmuSruAVyXvBBYemd0Ia "$WORK/answer" || die "nginx answered $code: $(cat "$WORK/answer")"
code=$(post "http://127.0.0.1:$relay_port/send" -H "Authorization: Bearer $TOKEN")
[[ $code == 200 ]] && grep -q '"id":"52JH6WmuSruAVyXvBBYemd0Ia"' "$WORK/answer" ||
    die "the relay answered $code: $(cat "$WORK/answer")"
code=$(post "http://127.0.0.1:$relay_port/send" -H "Authorization: Bearer wrong-token-0123456789")
[[ $code == 401 ]] || die "the relay answered $code to a wrong token"
grep -q '"request finished"' "$WORK/relay/stdout.log" || die "the relay logged no JSON request line"

# ---------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------
children() { pgrep -P "$1" | tr '\n' ' '; }
FAKE_ALL="$FAKE_PID $(children "$FAKE_PID")"
NGINX_ALL="$NGINX_PID $(children "$NGINX_PID")"

proc_ticks() { # "user system" clock ticks of the given pids (threads included), summed
    local u=0 s=0 p f
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
        u=$((u + f[11]))
        s=$((s + f[12]))
    done
    echo "$u $s"
}
cpu_line() { # busy and total ticks of one CPU ("all" for the machine)
    local name=cpu${1#all}
    awk -v n="$name" '$1 == n { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
hwm_kb() { # $1: field, rest: pids; summed
    local field=$1 t=0 p v
    shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2> /dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

RESULTS=$WORK/results.jsonl
: > "$RESULTS"
TICK_HZ=$(getconf CLK_TCK)

# run_wrk ROUND TARGET TEST CONNS DURATION PACE_MS
run_wrk() {
    local round=$1 target=$2 test=$3 conns=$4 dur=$5 pace=$6 url pids out line lines=-1
    case $target in
        fake) url=http://127.0.0.1:$FAKE_PORT/v1/messages pids=$FAKE_ALL ;;
        nginx) url=http://127.0.0.1:$NGINX_PORT/send pids=$NGINX_ALL ;;
        relay) url=http://127.0.0.1:$relay_port/send pids=$relay_pid ;;
    esac
    local u0 s0 f0 pa0 pb0
    # shellcheck disable=SC2086 # pid lists
    read -r u0 s0 < <(proc_ticks $pids)
    # shellcheck disable=SC2086
    f0=$(proc_ticks $FAKE_ALL | awk '{ print $1 + $2 }')
    pa0=$(cpu_line "${PROXY_CPU:-all}")
    pb0=$(cpu_line "${LOAD_CPU:-all}")
    out=$(BENCH_PACE_MS=$pace timeout $((dur + 30)) "${ON_LOAD[@]}" wrk -t1 -c"$conns" -d"${dur}s" \
        --timeout 5s -s "$BENCH_DIR/send.lua" "$url" 2>&1) || die "wrk failed against $target: $out"
    local u1 s1 f1 pa1 pb1
    # shellcheck disable=SC2086
    read -r u1 s1 < <(proc_ticks $pids)
    # shellcheck disable=SC2086
    f1=$(proc_ticks $FAKE_ALL | awk '{ print $1 + $2 }')
    pa1=$(cpu_line "${PROXY_CPU:-all}")
    pb1=$(cpu_line "${LOAD_CPU:-all}")
    line=$(grep '^BENCHJSON ' <<< "$out" | sed 's/^BENCHJSON //') || die "no result from wrk: $out"
    case $target in
        relay)
            lines=$(grep -c '"request finished"' "$WORK/relay/stdout.log" || true)
            : > "$WORK/relay/stdout.log"
            ;;
        nginx)
            lines=$(wc -l < "$WORK/nginx/access.log")
            : > "$WORK/nginx/access.log"
            ;;
    esac
    printf '{"round":%d,"target":"%s","test":"%s","conns":%d,"pace_ms":%d,"cpu_ms":%d,"cpu_user_ms":%d,"cpu_sys_ms":%d,"fake_cpu_ms":%d,"proxy_core":"%s %s","load_core":"%s %s","log_lines":%d,"wrk":%s}\n' \
        "$round" "$target" "$test" "$conns" "$pace" \
        $(((u1 - u0 + s1 - s0) * 1000 / TICK_HZ)) $(((u1 - u0) * 1000 / TICK_HZ)) \
        $(((s1 - s0) * 1000 / TICK_HZ)) $(((f1 - f0) * 1000 / TICK_HZ)) \
        "$pa0" "$pa1" "$pb0" "$pb1" "$lines" "$line" >> "$RESULTS"
    grep -o '"requests":[0-9]*' <<< "$line" | cut -d: -f2
}

# ---------------------------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: 2 s of load on each target"
for target in fake nginx relay; do
    run_wrk 0 "$target" warmup "$CONNS" 2 0 > /dev/null
done

est=$((ROUNDS * (2 * DURATION + 7 * LAT_DURATION + 2)))
log "$ROUNDS rounds of thr (c=$CONNS, ${DURATION}s), lat1 (c=1, ${LAT_DURATION}s), paced (c=$PACED_CONNS every ${PACE_MS} ms, ${LAT_DURATION}s): about ${est}s"
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=(nginx relay); else order=(relay nginx); fi
    summary=()
    for target in "${order[@]}"; do
        n=$(run_wrk "$round" "$target" thr "$CONNS" "$DURATION" 0)
        summary+=("$target $((n / DURATION))/s")
    done
    run_wrk "$round" fake thr "$CONNS" "$LAT_DURATION" 0 > /dev/null
    for target in fake "${order[@]}"; do
        run_wrk "$round" "$target" lat1 1 "$LAT_DURATION" 0 > /dev/null
    done
    for target in fake "${order[@]}"; do
        run_wrk "$round" "$target" paced "$PACED_CONNS" "$LAT_DURATION" "$PACE_MS" > /dev/null
    done
    log "round $round/$ROUNDS: ${summary[*]}"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Peak memory over the whole run (VmHWM: the resident set's high-water mark).
relay_hwm=$(hwm_kb VmHWM "$relay_pid")
relay_rss=$(hwm_kb VmRSS "$relay_pid")
# shellcheck disable=SC2086
NGINX_HWM=$(hwm_kb VmHWM $NGINX_ALL)
NGINX_WORKER_HWM=$(hwm_kb VmHWM $(children "$NGINX_PID"))
relay_threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$relay_pid/status")

# ---------------------------------------------------------------------------------------------
# Time from exec to ready
# ---------------------------------------------------------------------------------------------
log "exec to ready: $READY_RUNS starts of each"
ready_pin=()
[[ $PIN == 1 ]] && ready_pin=(--cpu "$PROXY_CPU" --self-cpu "$LOAD_CPU")
"${relay_env[@]}" "$PYTHON" "$BENCH_DIR/ready.py" --runs "$READY_RUNS" "${ready_pin[@]}" \
    --port-env RELAY_LISTEN_ADDR --path /readyz --marker 'qikchat-relay listening' -- \
    "$relay_bin" > "$WORK/ready-relay.json" || die "measuring the relay's start failed"
"$PYTHON" "$BENCH_DIR/ready.py" --runs "$READY_RUNS" "${ready_pin[@]}" --port "$READY_PORT" \
    --path /healthz -- "$NGINX" -p "$WORK/ready" -c "$WORK/ready/nginx.conf" \
    -e "$WORK/ready/error.log" -g 'daemon off;' > "$WORK/ready-nginx.json" ||
    die "measuring nginx's start failed"

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------
BIN_BYTES=$(stat -c %s "$relay_bin")
IMAGE_BYTES=''
IMAGE_FROM=''
if command -v docker > /dev/null && timeout 10 docker info > /dev/null 2>&1 &&
    IMAGE_BYTES=$(timeout 20 docker image inspect --format '{{.Size}}' "$IMAGE" 2> /dev/null); then
    IMAGE_FROM="docker image $IMAGE"
elif command -v podman > /dev/null; then
    cache=${QIKCHAT_CI_CACHE:-/var/tmp/qikchat-relay-ci}
    podman=(podman)
    [[ -d $cache/storage ]] && podman=(podman --root "$cache/storage" --runroot "$cache/run"
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend file)
    if IMAGE_BYTES=$(timeout 20 "${podman[@]}" image inspect --format '{{.Size}}' "$IMAGE" 2> /dev/null); then
        IMAGE_FROM="podman image $IMAGE"
    else
        IMAGE_BYTES=''
    fi
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
cat > "$WORK/meta.json" << EOF
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)",
 "cpu_model": "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo | tr -d '"')",
 "cpus": ${#CPUS[@]}, "mem_mb": $(awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo),
 "kernel": "$(uname -r)", "nginx": "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')",
 "wrk": "$(wrk -v 2>&1 | head -n1 | awk '{ print $2 }')",
 "rustc": "$(rustc --version 2> /dev/null | awk '{ print $2 }')",
 "relay_from": "$relay_from",
 "layout": "$layout", "pin": $PIN,
 "rounds": $ROUNDS, "duration_s": $DURATION, "lat_duration_s": $LAT_DURATION,
 "conns": $CONNS, "paced_conns": $PACED_CONNS, "pace_ms": $PACE_MS, "ready_runs": $READY_RUNS,
 "load_before": "$LOAD_BEFORE", "load_after": "$LOAD_AFTER",
 "relay_hwm_kb": $relay_hwm, "relay_rss_end_kb": $relay_rss, "relay_threads": $relay_threads,
 "nginx_hwm_kb": $NGINX_HWM, "nginx_worker_hwm_kb": $NGINX_WORKER_HWM,
 "bin_bytes": $BIN_BYTES, "image_bytes": ${IMAGE_BYTES:-null}, "image_from": "$IMAGE_FROM",
 "command": "bash bench/run.sh"}
EOF

mkdir -p "$RAW_DIR" "$(dirname "$OUT")"
cp "$RESULTS" "$WORK/meta.json" "$WORK/ready-relay.json" "$WORK/ready-nginx.json" "$RAW_DIR/"
"$PYTHON" "$BENCH_DIR/report.py" "$RAW_DIR" > "$OUT" || die "the report failed"
cat "$OUT"
log "done in $((SECONDS - START)) s: $OUT (raw data in $RAW_DIR)"
