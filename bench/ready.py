#!/usr/bin/env python3
"""Time from exec to ready, measured several times (used by bench/run.sh).

    ready.py --runs N --port-env VAR|--port P --path /healthz [--marker TEXT] [--cpu C] [--self-cpu C] -- CMD...

Each run: take the time, exec CMD (with a fresh free loopback port in $VAR when --port-env is
given, as `127.0.0.1:<port>`), then
  - marker_ms: until a line containing TEXT appears on its stdout (when --marker is given);
  - http_ms:   until `GET <path>` on 127.0.0.1:<port> answers 200 (polled every 0.5 ms);
  - idle RSS (VmRSS) right after that; then SIGTERM and wait.
Prints one JSON object with every run's numbers.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def one_run(args, cmd) -> dict:
    env = dict(os.environ)
    port = args.port
    if args.port_env:
        port = free_port()
        env[args.port_env] = f"127.0.0.1:{port}"
    marker_at = [None]
    started = time.perf_counter()
    pin = None
    if args.cpu is not None:
        pin = lambda: os.sched_setaffinity(0, {args.cpu})  # noqa: E731 (the child only)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin
    )

    def read_stdout():
        for raw in proc.stdout:
            if marker_at[0] is None and args.marker and args.marker.encode() in raw:
                marker_at[0] = time.perf_counter()
        # keep draining until the process ends

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    http_at = None
    deadline = started + args.timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            break
        if http_ok(port, args.path):
            http_at = time.perf_counter()
            break
        time.sleep(0.0005)
    idle_rss = rss_kb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=2)
    if args.marker and marker_at[0] is None:
        raise SystemExit(f"ready.py: no '{args.marker}' line from {cmd[0]}")
    if http_at is None:
        raise SystemExit(f"ready.py: {cmd[0]} never answered 200 on {args.path}")
    return {
        "marker_ms": None if marker_at[0] is None else (marker_at[0] - started) * 1e3,
        "http_ms": (http_at - started) * 1e3,
        "idle_rss_kb": idle_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--port", type=int)
    parser.add_argument("--port-env")
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--marker")
    parser.add_argument("--cpu", type=int, help="pin the measured process to this CPU")
    parser.add_argument("--self-cpu", type=int, help="pin this poller to this CPU")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd or (args.port is None) == (args.port_env is None):
        parser.error("need CMD and exactly one of --port / --port-env")
    if args.self_cpu is not None:
        os.sched_setaffinity(0, {args.self_cpu})
    runs = [one_run(args, cmd) for _ in range(args.runs)]
    json.dump({"runs": runs}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
