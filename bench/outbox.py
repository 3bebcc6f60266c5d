#!/usr/bin/env python3
"""The load and the arithmetic of bench/outbox.sh.

    outbox.py one      --url URL --token T --count N --conns C [--tag TAG]
    outbox.py batch    --url URL --token T --size N --rounds R [--tag TAG] [--send-at RFC3339]
    outbox.py schedule --url URL --token T --count N --in-s S       (prints the send_at, in epoch s)
    outbox.py arrivals --log FILE --skip LINES --count N --within-s S   (waits, prints epoch s)
    outbox.py drain    --arrivals FILE --rate R
    outbox.py latency  --arrivals FILE --send-at EPOCH
    outbox.py table    RESULTS.jsonl

`one`: N `POST /messages`, each a different text message, over C keep-alive connections (one
thread each): accepted per second, from the first request to the last answer. `batch`: R
`POST /messages/batch` of N messages each, one after the other: messages accepted per second (the
median round). Both print one JSON object and fail on any answer but 202 (or an item refused).
`arrivals`: the epoch times (nginx's `$msec`, first field of each line) of N lines of the fake's
access log after its first LINES lines, once there are N of them.
"""

import argparse
import datetime
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

RECIPIENT = "+918080808080"


def message(tag: str, n: int, send_at: str | None = None) -> dict:
    body = {
        "to": RECIPIENT,
        "type": "text",
        "text": f"outbox bench {tag} {n}",
        "reference": f"{tag}-{n}",
    }
    if send_at:
        body["send_at"] = send_at
    return body


def connect(url: str) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)


def post(conn: http.client.HTTPConnection, path: str, token: str, body: dict) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    conn.request(
        "POST",
        path,
        body=data,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    answer = conn.getresponse()
    return answer.status, answer.read()


def rfc3339(epoch: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def one(args: argparse.Namespace) -> None:
    errors: list[str] = []
    per_conn = [args.count // args.conns + (1 if i < args.count % args.conns else 0) for i in range(args.conns)]
    start_line = threading.Barrier(args.conns + 1)

    def worker(index: int, count: int) -> None:
        conn = connect(args.url)
        start_line.wait()
        for n in range(count):
            status, body = post(conn, "/messages", args.token, message(f"{args.tag}-c{index}", n))
            if status != 202:
                errors.append(f"{status} {body[:200]!r}")
                return

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(per_conn)]
    for t in threads:
        t.start()
    start_line.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        sys.exit(f"outbox.py one: {len(errors)} failures, e.g. {errors[0]}")
    print(json.dumps({"count": args.count, "conns": args.conns, "seconds": round(seconds, 4),
                      "per_s": round(args.count / seconds, 1)}))


def batch(args: argparse.Namespace) -> None:
    conn = connect(args.url)
    rounds = []
    for r in range(args.rounds):
        body = {"messages": [message(f"{args.tag}-r{r}", n, args.send_at) for n in range(args.size)]}
        started = time.perf_counter()
        status, answer = post(conn, "/messages/batch", args.token, body)
        seconds = time.perf_counter() - started
        if status != 202:
            sys.exit(f"outbox.py batch: {status} {answer[:300]!r}")
        results = json.loads(answer)["results"]
        refused = [r for r in results if "error" in r]
        if len(results) != args.size or refused:
            sys.exit(f"outbox.py batch: {len(results)} results, {len(refused)} refused, e.g. {refused[:1]}")
        rounds.append(seconds)
    median = statistics.median(rounds)
    print(json.dumps({"size": args.size, "rounds": [round(s, 4) for s in rounds],
                      "seconds": round(median, 4), "per_s": round(args.size / median, 1)}))


def schedule(args: argparse.Namespace) -> None:
    send_at = round(time.time() + args.in_s, 3)
    conn = connect(args.url)
    body = {"messages": [message("scheduled", n, rfc3339(send_at)) for n in range(args.count)]}
    status, answer = post(conn, "/messages/batch", args.token, body)
    if status != 202 or any("error" in r for r in json.loads(answer)["results"]):
        sys.exit(f"outbox.py schedule: {status} {answer[:300]!r}")
    print(f"{send_at:.3f}")


def arrivals(args: argparse.Namespace) -> None:
    deadline = time.time() + args.within_s
    while True:
        with open(args.log) as f:
            lines = f.read().splitlines()[args.skip:]
        if len(lines) >= args.count or time.time() > deadline:
            break
        time.sleep(0.05)
    if len(lines) < args.count:
        sys.exit(f"outbox.py arrivals: {len(lines)} of {args.count} sends arrived in {args.within_s} s")
    for line in lines[: args.count]:
        print(line.split()[0])


def read_times(path: str) -> list[float]:
    with open(path) as f:
        return sorted(float(line) for line in f if line.strip())


def drain(args: argparse.Namespace) -> None:
    times = read_times(args.arrivals)
    # The account's rate is also its burst: the first `rate` go at once. The steady pace is what
    # follows, from the first send after the burst to the last.
    burst = int(args.rate)
    steady = times[burst:]
    overall = (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else float("inf")
    pace = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 and steady[-1] > steady[0] else float("nan")
    print(json.dumps({"count": len(times), "configured": args.rate, "steady_per_s": round(pace, 2),
                      "overall_per_s": round(overall, 2), "seconds": round(times[-1] - times[0], 3)}))


def latency(args: argparse.Namespace) -> None:
    late = [(t - args.send_at) * 1000 for t in read_times(args.arrivals)]
    late.sort()
    print(json.dumps({"count": len(late), "min_ms": round(late[0], 1),
                      "p50_ms": round(statistics.median(late), 1), "max_ms": round(late[-1], 1),
                      "early": sum(1 for ms in late if ms < 0)}))


def table(args: argparse.Namespace) -> None:
    rows: dict[str, dict] = {}
    meta = {}
    with open(args.results) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "meta":
                meta = record
                continue
            rows.setdefault(record["mode"], {})[record["kind"]] = record
    modes = [m for m in ("embedded", "redis") if m in rows]

    def cell(mode: str, kind: str, fmt) -> str:
        record = rows[mode].get(kind)
        return fmt(record) if record else "n/a"

    lines = [
        "| | " + " | ".join("embedded (SQLite)" if m == "embedded" else "Redis" for m in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    specs = [
        ("accepted/s, one batch of {batch} (median of {rounds})", "batch",
         lambda r: f"{r['per_s']:.0f} ({r['seconds'] * 1000:.0f} ms a batch)"),
        ("accepted/s, {one} `POST /messages` over {conns} connections", "one",
         lambda r: f"{r['per_s']:.0f}"),
        ("drain at `rate_per_second = {rate}`: measured after the burst", "drain",
         lambda r: f"{r['steady_per_s']:.1f}/s ({r['steady_per_s'] / r['configured'] * 100:.0f}% of configured; {r['count']} in {r['seconds']:.1f} s)"),
        ("`send_at` to Qikchat's call, {scheduled} messages: p50 / max", "latency",
         lambda r: f"{r['p50_ms']:.0f} / {r['max_ms']:.0f} ms" + (f" ({r['early']} early!)" if r["early"] else "")),
    ]
    for label, kind, fmt in specs:
        lines.append("| " + label.format(**meta) + " | " + " | ".join(cell(m, kind, fmt) for m in modes) + " |")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("one")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--tag", default="one")
    p.set_defaults(run=one)
    p = sub.add_parser("batch")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tag", default="batch")
    p.add_argument("--send-at")
    p.set_defaults(run=batch)
    p = sub.add_parser("schedule")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--in-s", type=float, default=3.0)
    p.set_defaults(run=schedule)
    p = sub.add_parser("arrivals")
    p.add_argument("--log", required=True)
    p.add_argument("--skip", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--within-s", type=float, default=60)
    p.set_defaults(run=arrivals)
    p = sub.add_parser("drain")
    p.add_argument("--arrivals", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.set_defaults(run=drain)
    p = sub.add_parser("latency")
    p.add_argument("--arrivals", required=True)
    p.add_argument("--send-at", type=float, required=True)
    p.set_defaults(run=latency)
    p = sub.add_parser("table")
    p.add_argument("results")
    p.set_defaults(run=table)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
