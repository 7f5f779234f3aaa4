#!/usr/bin/env python3
"""Figures of the WeChat-compatible gateway (issue 13), on a private stack: a
redis-server, the sandbox WeChat API and three instances of the release binary with
`gateway.enabled`, on local ports (BASE_PORT and up).

1. Overhead: the same WeChat call (`GET /cgi-bin/menu/get`) made directly to the
   sandbox and through one instance, sequentially on kept-alive connections,
   alternating rounds; p50 and p99 of each, and the difference.
2. A 10 MiB media upload, directly and through the gateway: the median time of each.
3. Three instances hammered by THREADS clients (spread over them) for SECONDS, each
   client fetching the token and the ticket through the gateway as an SDK does and
   making a forwarded call; halfway, WeChat revokes every token (a 40001 for the next
   forwarded calls, which heal). Upstream calls per endpoint, from the sandbox.

Not a test and not in CI: the figures depend on the machine. Settings (environment):
WXJSSDK_BIN (default target/release/wx-jssdk), BASE_PORT (16500), CALLS (2000),
THREADS (12), SECONDS (20).
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("WXJSSDK_BIN", os.path.join(ROOT, "target/release/wx-jssdk"))
BASE = int(os.environ.get("BASE_PORT", "16500"))
CALLS = int(os.environ.get("CALLS", "2000"))
THREADS = int(os.environ.get("THREADS", "12"))
SECONDS = float(os.environ.get("SECONDS", "20"))
APPID, SECRET = "wxgatewaybench00001", "gateway-bench-secret"
REDIS, SANDBOX = BASE, BASE + 10
INSTANCES = [BASE + 1, BASE + 2, BASE + 3]


def wait_for(port, path):
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing answers on port {port}")


def start():
    procs = [subprocess.Popen(["redis-server", "--port", str(REDIS), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([BIN, "sandbox", "--bind", f"127.0.0.1:{SANDBOX}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(SANDBOX, "/sandbox/calls")
    sandbox = f"http://127.0.0.1:{SANDBOX}"
    for port in INSTANCES:
        env = dict(os.environ, RUST_LOG="warn", WXJSSDK__SERVER__BIND=f"127.0.0.1:{port}",
                   WXJSSDK__SERVER__WORKERS="1", WXJSSDK__REDIS__URL=f"redis://127.0.0.1:{REDIS}/0",
                   WXJSSDK__WECHAT__API_BASE=sandbox, WXJSSDK__WECHAT__WORK_API_BASE=sandbox,
                   WXJSSDK__APPS__DEFAULT__APPID=APPID, WXJSSDK__APPS__DEFAULT__SECRET=SECRET,
                   WXJSSDK__APPS__DEFAULT__TOKEN="bench-server-token", WXJSSDK__GATEWAY__ENABLED="true")
        env.pop("WXJSSDK_CONFIG", None)
        procs.append(subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL))
        wait_for(port, "/healthz")
    return procs


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("x-wxjssdk-retried")


def token_through(conn):
    _, body, _ = call(conn, "GET", f"/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}")
    return json.loads(body)["access_token"]


def percentiles(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def overhead():
    gateway = http.client.HTTPConnection("127.0.0.1", INSTANCES[0])
    direct = http.client.HTTPConnection("127.0.0.1", SANDBOX)
    token = token_through(gateway)
    path = f"/cgi-bin/menu/get?access_token={token}"
    times = {"direct": [], "gateway": []}
    for _ in range(10):
        for name, conn in (("direct", direct), ("gateway", gateway)):
            for _ in range(CALLS // 10):
                started = time.perf_counter()
                status, body, _ = call(conn, "GET", path)
                times[name].append((time.perf_counter() - started) * 1000)
                assert status == 200 and b'"errcode":0' in body, body
    (d50, d99), (g50, g99) = percentiles(times["direct"]), percentiles(times["gateway"])
    print(f"1. GET /cgi-bin/menu/get, {CALLS} calls each, sequential, kept-alive:")
    print(f"   direct  p50 {d50:.3f} ms  p99 {d99:.3f} ms")
    print(f"   gateway p50 {g50:.3f} ms  p99 {g99:.3f} ms  (overhead p50 {g50 - d50:.3f} ms)")
    upload = bytes(i % 251 for i in range(10 * 1024 * 1024))
    path = f"/cgi-bin/media/upload?access_token={token}&type=video"
    headers = {"Content-Type": "application/octet-stream"}
    uploads = {"direct": [], "gateway": []}
    for _ in range(5):
        for name, conn in (("direct", direct), ("gateway", gateway)):
            started = time.perf_counter()
            status, body, _ = call(conn, "POST", path, upload, headers)
            uploads[name].append((time.perf_counter() - started) * 1000)
            assert status == 200 and json.loads(body)["body_bytes"] == len(upload), body
    print("2. POST /cgi-bin/media/upload, 10 MiB, median of 5:")
    for name, samples in uploads.items():
        ms = statistics.median(samples)
        print(f"   {name:7} {ms:.1f} ms ({len(upload) / ms / 1000:.0f} MB/s)")


def hammer():
    calls = lambda: json.loads(call(http.client.HTTPConnection("127.0.0.1", SANDBOX), "GET", "/sandbox/calls")[1])
    before = calls()
    stop = time.time() + SECONDS
    counts = {"answers": 0, "errors": 0, "retried": 0}
    errcodes = {}
    lock = threading.Lock()

    def client(port):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.time() < stop:
            token = token_through(conn)
            _, ticket, _ = call(conn, "GET", f"/cgi-bin/ticket/getticket?access_token={token}&type=jsapi")
            status, body, retried = call(conn, "GET", f"/cgi-bin/user/info?access_token={token}&openid=o1")
            ok = status == 200 and b'"errcode":0' in body and b'"ticket"' in ticket
            with lock:
                counts["answers"] += 3
                counts["errors"] += 0 if ok else 1
                counts["retried"] += 1 if retried else 0
                if not ok:
                    failed = body if b'"ticket"' in ticket else ticket
                    code = json.loads(failed).get("errcode") if status == 200 else status
                    errcodes[code] = errcodes.get(code, 0) + 1

    threads = [threading.Thread(target=client, args=(INSTANCES[i % 3],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS / 2)
    revoke = http.client.HTTPConnection("127.0.0.1", SANDBOX)
    call(revoke, "POST", "/sandbox/revoke", json.dumps({"appid": APPID}), {"Content-Type": "application/json"})
    for thread in threads:
        thread.join()
    after = calls()
    upstream = {key: after[key] - before.get(key, 0) for key in after}
    print(f"3. {THREADS} clients on 3 instances for {SECONDS:.0f} s (token, ticket, forwarded call each round;"
          f" every token revoked halfway):")
    print(f"   {counts['answers']} answers, {counts['errors']} rounds with an error, "
          f"{counts['retried']} forwarded calls healed (X-WxJssdk-Retried); errcodes of the errors: {errcodes}")
    print(f"   upstream: stable_token {upstream['stable_token']} (forced {upstream['stable_token_force']}), "
          f"token {upstream['token']}, getticket {upstream['getticket']}, other API calls {upstream['api']}")


def main():
    procs = start()
    try:
        overhead()
        hammer()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
