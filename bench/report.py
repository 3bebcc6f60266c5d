#!/usr/bin/env python3
"""Turns bench/run.sh's raw data into the markdown report: medians across rounds, ratios taken
within each round (relay/nginx, proxy minus fake) and then their median.

    report.py RAW_DIR   (results.jsonl, meta.json, ready-relay.json, ready-nginx.json)
"""

import json
import statistics
import sys
from pathlib import Path

raw = Path(sys.argv[1])
meta = json.loads((raw / "meta.json").read_text())
rows = [json.loads(line) for line in (raw / "results.jsonl").read_text().splitlines() if line]
rows = [r for r in rows if r["round"] >= 1]
ready_relay = json.loads((raw / "ready-relay.json").read_text())["runs"]
ready_nginx = json.loads((raw / "ready-nginx.json").read_text())["runs"]

TARGETS = ("fake", "nginx", "relay")
rounds = sorted({r["round"] for r in rows})


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def get(target, test, rnd):
    for r in rows:
        if r["target"] == target and r["test"] == test and r["round"] == rnd:
            return r
    return None


def rps(r):
    return r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6)


def busy(field):
    def f(r):
        b0, t0, b1, t1 = (int(x) for x in r[field].split())
        return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else None

    return f


def per_round(test, fn, target):
    return [fn(r) for rnd in rounds if (r := get(target, test, rnd))]


def fmt(v, spec=".2f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def spread(values, spec=".2f"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{min(values):{spec}}–{max(values):{spec}}"


out = []
w = out.append

# --- throughput -------------------------------------------------------------------------------
thr = {t: per_round("thr", rps, t) for t in TARGETS}
ratios = []
for rnd in rounds:
    n, rl = get("nginx", "thr", rnd), get("relay", "thr", rnd)
    if n and rl:
        ratios.append(rps(rl) / rps(n))
ratio = med(ratios)


def per_request_us(field):
    """The throughput runs' CPU time `field` (ms), in µs per request, for each target."""
    return {
        t: per_round("thr", lambda r: r[field] * 1000 / max(r["wrk"]["requests"], 1), t)
        for t in ("nginx", "relay")
    }


cpu_us = per_request_us("cpu_ms")
cpu_user_us = per_request_us("cpu_user_ms")
cpu_sys_us = per_request_us("cpu_sys_ms")
fake_cpu_us = per_request_us("fake_cpu_ms")
proxy_busy = {t: per_round("thr", busy("proxy_core"), t) for t in ("nginx", "relay")}
load_busy = {t: per_round("thr", busy("load_core"), t) for t in ("nginx", "relay")}


# --- latency ------------------------------------------------------------------------------------
def lat(test, target, pct):
    return per_round(test, lambda r: r["wrk"][f"{pct}_us"] / 1000, target)


def added(test, target, pct):
    values = []
    for rnd in rounds:
        f, p = get("fake", test, rnd), get(target, test, rnd)
        if f and p:
            values.append((p["wrk"][f"{pct}_us"] - f["wrk"][f"{pct}_us"]) / 1000)
    return values


# --- errors and logs --------------------------------------------------------------------------
errors = {}
for t in TARGETS:
    e = 0
    for r in rows:
        if r["target"] == t:
            w_ = r["wrk"]
            e += w_["err_connect"] + w_["err_read"] + w_["err_write"] + w_["err_status"] + w_["err_timeout"]
    errors[t] = e
requests_total = {t: sum(r["wrk"]["requests"] for r in rows if r["target"] == t) for t in TARGETS}
log_lines = {t: sum(r["log_lines"] for r in rows if r["target"] == t) for t in ("nginx", "relay")}

# --- memory, start, sizes ---------------------------------------------------------------------
MB = 1e6
relay_hwm = meta["relay_hwm_kb"] * 1024 / MB
nginx_hwm = meta["nginx_hwm_kb"] * 1024 / MB
relay_marker = [r["marker_ms"] for r in ready_relay]
relay_http = [r["http_ms"] for r in ready_relay]
nginx_http = [r["http_ms"] for r in ready_nginx]
relay_idle = med([r["idle_rss_kb"] for r in ready_relay])
nginx_idle = med([r["idle_rss_kb"] for r in ready_nginx])

# --- targets ------------------------------------------------------------------------------------
def verdict(value, limit, higher_is_better=False):
    if value is None:
        return "n/a"
    ok = value >= limit if higher_is_better else value <= limit
    return "**met**" if ok else "**missed**"


a1_50, a1_99 = med(added("lat1", "relay", "p50")), med(added("lat1", "relay", "p99"))
ap_50, ap_99 = med(added("paced", "relay", "p50")), med(added("paced", "relay", "p99"))
ready_med, ready_max = med(relay_http), max(relay_http)

w(f"## Results ({meta['date']})")
w("")
w(f"- Machine: {meta['cpu_model']}, {meta['cpus']} CPUs, {meta['mem_mb']} MB RAM, Linux "
  f"{meta['kernel']}; nginx {meta['nginx']}, wrk {meta['wrk']}, rustc {meta['rustc']}; "
  f"relay: {meta['relay_from']}.")
w(f"- Command: `{meta['command']}` ({meta['rounds']} rounds; throughput {meta['duration_s']} s at "
  f"{meta['conns']} connections; latency runs {meta['lat_duration_s']} s; paced load "
  f"{meta['paced_conns']} connections each sending every {meta['pace_ms']} ms; wrk -t1, keep-alive).")
w(f"- CPU layout: {meta['layout']}. Load average before/after: {meta['load_before']} / "
  f"{meta['load_after']}.")
w("- Every number is the median over the rounds; ratios and added latencies are computed within "
  "each round (same moment, same machine state) and then their median is taken; ranges are "
  "min–max over the rounds.")
w("")
w("### Targets")
w("")
w("| target | goal | measured | verdict |")
w("|---|---|---|---|")
w(f"| throughput relay/nginx | >= 1.0 (stretch 1.2) | {fmt(ratio)} ({spread(ratios)}) | "
  f"{verdict(ratio, 1.0, True)}{' (stretch met)' if ratio and ratio >= 1.2 else ''} |")
w(f"| added latency p50, one connection | <= 0.3 ms | {fmt(a1_50, '.3f', ' ms')} | {verdict(a1_50, 0.3)} |")
w(f"| added latency p99, one connection | <= 1 ms | {fmt(a1_99, '.3f', ' ms')} | {verdict(a1_99, 1.0)} |")
w(f"| added latency p50, paced load | <= 0.3 ms | {fmt(ap_50, '.3f', ' ms')} | {verdict(ap_50, 0.3)} |")
w(f"| added latency p99, paced load | <= 1 ms | {fmt(ap_99, '.3f', ' ms')} | {verdict(ap_99, 1.0)} |")
w(f"| relay peak RSS under load | <= 30 MB | {relay_hwm:.1f} MB | {verdict(relay_hwm, 30)} |")
w(f"| exec to ready (median / worst of {len(relay_http)}) | <= 100 ms | "
  f"{ready_med:.1f} / {ready_max:.1f} ms | {verdict(ready_max, 100)} |")
w("")
w("### Throughput (POST /send, saturated)")
w("")
w("| | fake direct | nginx | relay |")
w("|---|---|---|---|")
w(f"| requests/s | {fmt(med(thr['fake']), ',.0f')} | {fmt(med(thr['nginx']), ',.0f')} | "
  f"{fmt(med(thr['relay']), ',.0f')} |")
w(f"| range over rounds | {spread(thr['fake'], ',.0f')} | {spread(thr['nginx'], ',.0f')} | "
  f"{spread(thr['relay'], ',.0f')} |")
w(f"| proxy CPU per request | | {fmt(med(cpu_us['nginx']), '.1f', ' µs')} | "
  f"{fmt(med(cpu_us['relay']), '.1f', ' µs')} |")
w(f"| of which user / kernel | | {fmt(med(cpu_user_us['nginx']), '.1f')} / "
  f"{fmt(med(cpu_sys_us['nginx']), '.1f', ' µs')} | {fmt(med(cpu_user_us['relay']), '.1f')} / "
  f"{fmt(med(cpu_sys_us['relay']), '.1f', ' µs')} |")
w(f"| fake CPU per request | | {fmt(med(fake_cpu_us['nginx']), '.1f', ' µs')} | "
  f"{fmt(med(fake_cpu_us['relay']), '.1f', ' µs')} |")
if meta["pin"]:
    w(f"| proxy's CPU busy | | {fmt(med(proxy_busy['nginx']), '.0f', ' %')} | "
      f"{fmt(med(proxy_busy['relay']), '.0f', ' %')} |")
    w(f"| wrk+fake CPU busy | | {fmt(med(load_busy['nginx']), '.0f', ' %')} | "
      f"{fmt(med(load_busy['relay']), '.0f', ' %')} |")
w(f"| relay/nginx | | | **{fmt(ratio)}** ({spread(ratios)}) |")
w("")
w("### Latency (ms; added = proxy minus the fake called directly, same round)")
w("")
w("| run | percentile | fake direct | nginx | relay | added by nginx | added by relay |")
w("|---|---|---|---|---|---|---|")
names = {
    "lat1": "one connection",
    "paced": f"paced load ({meta['paced_conns']} conns)",
    "thr": f"saturated ({meta['conns']} conns)",
}
for test in ("lat1", "paced", "thr"):
    w(f"| {names[test]} | requests/s | {fmt(med(per_round(test, rps, 'fake')), ',.0f')} | "
      f"{fmt(med(per_round(test, rps, 'nginx')), ',.0f')} | {fmt(med(per_round(test, rps, 'relay')), ',.0f')} | | |")
    for pct in ("p50", "p99"):
        w(f"| {names[test]} | {pct} | {fmt(med(lat(test, 'fake', pct)), '.3f')} | "
          f"{fmt(med(lat(test, 'nginx', pct)), '.3f')} | {fmt(med(lat(test, 'relay', pct)), '.3f')} | "
          f"{fmt(med(added(test, 'nginx', pct)), '.3f')} | {fmt(med(added(test, 'relay', pct)), '.3f')} |")
w("")
w("At saturation every request waits behind the others (latency ≈ connections / throughput), so "
  "that row measures throughput again; the targets are judged on one connection and paced load.")
w("")
w("### Memory, start, size")
w("")
w("| | nginx proxy | relay |")
w("|---|---|---|")
w(f"| peak RSS over the run (VmHWM) | {nginx_hwm:.1f} MB (master + worker) | {relay_hwm:.1f} MB "
  f"({meta['relay_threads']} threads) |")
w(f"| RSS right after start | {fmt(nginx_idle and nginx_idle * 1024 / MB, '.1f', ' MB')} | "
  f"{fmt(relay_idle and relay_idle * 1024 / MB, '.1f', ' MB')} |")
w(f"| exec to HTTP 200 (median / worst of {len(relay_http)}) | {med(nginx_http):.1f} / "
  f"{max(nginx_http):.1f} ms | {ready_med:.1f} / {ready_max:.1f} ms |")
w(f"| exec to the relay's \"listening\" line | | {med(relay_marker):.1f} / {max(relay_marker):.1f} ms |")
w(f"| binary | | {meta['bin_bytes'] / MB:.1f} MB |")
image = (f"{meta['image_bytes'] / MB:.1f} MB ({meta['image_from']})" if meta.get("image_bytes")
         else "no image found (build one with deploy/test-image.sh)")
w(f"| container image | | {image} |")
w("")
w("### Checks")
w("")
w(f"- Failed requests (connect/read/write errors, timeouts, non-2xx): fake {errors['fake']}, "
  f"nginx {errors['nginx']}, relay {errors['relay']} (of {requests_total['fake']:,}, "
  f"{requests_total['nginx']:,}, {requests_total['relay']:,}).")
w(f"- Log lines written: nginx {log_lines['nginx']:,} access-log lines, relay "
  f"{log_lines['relay']:,} JSON \"request finished\" lines, for {requests_total['nginx']:,} and "
  f"{requests_total['relay']:,} requests.")
print("\n".join(out))
