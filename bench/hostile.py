#!/usr/bin/env python3
"""The relay under the attacks of "Holding under hostile load", measured from outside.

Starts the relay binary (default target/release/qikchat-relay; build it with `cargo build --release`)
in sandbox mode on a free port with the default limits, then measures:
  - resident memory before, at the peak of, and after 1,500 connections that each send a request line
    and thirty 8 KB header lines, then stop; and whether another caller's send succeeds meanwhile;
  - how long the relay takes to close a connection that stalls at each stage (silent, half a request
    line, headers trickled one a second, idle after an answer, a body that never finishes);
  - the size of /metrics before and after 20,000 requests with invented methods.
Prints a Markdown table. Usage: python3 bench/hostile.py [BINARY]
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

TOKEN = "bench-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def send(base):
    body = json.dumps({"to": "+918080808080", "type": "text", "text": "Your OTP is 4711"}).encode()
    req = urllib.request.Request(f"{base}/send", data=body, method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except Exception as e:  # noqa: BLE001 - any failure is a failed send here
        return str(e)


async def until_closed(reader, limit=120.0):
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(4096), timeout=limit - (time.monotonic() - started)):
            pass
    except (asyncio.TimeoutError, ConnectionError):
        return None if time.monotonic() - started >= limit else time.monotonic() - started
    return time.monotonic() - started


async def stall(port, stage):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if stage == "half a request line":
        writer.write(b"POST /se")
    elif stage == "headers trickled one a second":
        writer.write(b"POST /send HTTP/1.1\r\nHost: relay\r\n")

        async def trickle():
            for n in range(200):
                await asyncio.sleep(1)
                try:
                    writer.write(f"x-{n}: y\r\n".encode())
                    await writer.drain()
                except ConnectionError:
                    return
        task = asyncio.ensure_future(trickle())
    elif stage == "idle after an answer":
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        await reader.readuntil(b'{"status":"ok"}')
    elif stage == "body never finished":
        writer.write((f"POST /send HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode())
    await writer.drain()
    took = await until_closed(reader)
    if stage == "headers trickled one a second":
        task.cancel()
    writer.close()
    return took


async def flood(port, pid, base, n=1500):
    header = b"x-flood: " + b"a" * 8192 + b"\r\n"
    peak = rss_mb(pid)
    writers = []

    async def one():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /send HTTP/1.1\r\nHost: relay\r\n")
            for _ in range(30):
                writer.write(header)
                await writer.drain()
            writers.append(writer)
        except (ConnectionError, OSError):
            pass

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    sent = None
    while not all(t.done() for t in tasks):
        peak = max(peak, rss_mb(pid))
        if sent is None:
            sent = await asyncio.get_running_loop().run_in_executor(None, send, base)
        await asyncio.sleep(0.02)
    peak = max(peak, rss_mb(pid))
    for w in writers:
        w.close()
    return peak, sent


async def odd_methods(port, n=20000, connections=8):
    async def worker(k):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(k, n, connections):
            writer.write(f"TOK{i:06d}X /send HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
            await reader.readexactly(length)
        writer.close()
    await asyncio.gather(*(worker(k) for k in range(connections)))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/qikchat-relay"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PATH": os.environ.get("PATH", ""), "RELAY_SANDBOX": "true", "RELAY_LISTEN_ADDR": f"127.0.0.1:{port}",
           "RELAY_CLIENTS": f"bench:{TOKEN}", "RELAY_DATA_DIR": f"/tmp/relay-hostile-{port}",
           "RUST_LOG": "warn", "RELAY_MEDIA_PREFLIGHT": "off"}
    relay = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                get(f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.05)
        rows = []
        before = rss_mb(relay.pid)
        peak, sent = asyncio.run(flood(port, relay.pid, base))
        time.sleep(1)
        after = rss_mb(relay.pid)
        rows.append(("RSS before / peak during / 1 s after 1,500 connections x 30 x 8 KB headers",
                     f"{before:.1f} / {peak:.1f} / {after:.1f} MB"))
        rows.append(("another caller's send during that flood", str(sent)))
        for stage in ["silent", "half a request line", "headers trickled one a second",
                      "idle after an answer", "body never finished"]:
            took = asyncio.run(stall(port, stage))
            rows.append((f"closed: {stage}", "still open after 120 s" if took is None else f"{took:.2f} s"))
        metrics_before = len(get(f"{base}/metrics"))
        asyncio.run(odd_methods(port))
        metrics_after = len(get(f"{base}/metrics"))
        rows.append(("/metrics before / after 20,000 invented methods", f"{metrics_before:,} / {metrics_after:,} bytes"))
        print("| measured | result |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        relay.terminate()
        relay.wait(timeout=40)
        subprocess.run(["rm", "-rf", env["RELAY_DATA_DIR"]], check=False)


if __name__ == "__main__":
    main()
