#!/usr/bin/env python3
"""Steady, bounded-rate signing load for soak/run.sh, with every answer checked.

One thread per target URL sends `GET /wxJssdk/getJssdk?url=PAGE` at RATE/len(targets)
requests per second over a keep-alive connection, until DURATION seconds have passed
(so the request count is bounded by RATE * DURATION). Another thread polls the
sandbox's newest jsapi ticket every 0.2 s, so every ticket the instances can sign with
is known (a ticket is the newest for a whole renewal period, seconds, not 0.2 s).

Every 200 answer is checked, not a sample: its signature must be
sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U") for a ticket T the sandbox
handed out, and S must fall inside T's life (at most EXPIRES_IN after it was first
seen). An answer signed with a ticket minted after the last poll is checked again
once the load has stopped and the tickets were polled one last time.

Every other answer (non-2xx, or no answer at all: connection refused or reset,
timeout) is recorded with its time and target. At the end the windows written by
run.sh to WINDOWS_FILE ("LABEL START END TARGET KINDS", epoch seconds, TARGET "*" for
any, KINDS "503" or "503,conn") say which failures were announced: a failure counts as
inside a window if the request overlapped it, went to its target and is of one of its
kinds (a 503, or no answer for "conn"); anything else is outside.

Writes a JSON summary to OUT and prints it readably; exit status 0 means nothing
outside the windows and every 200 verified.
"""

import argparse
import hashlib
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter

PAGE = "https://page.example.com/soak?x=1"
PATH = "/wxJssdk/getJssdk?url=" + urllib.parse.quote(PAGE, safe="")


class Tickets:
    """Every jsapi ticket seen, with the time it was first seen."""

    def __init__(self, sandbox, appid):
        self.url = urllib.parse.urlsplit(sandbox)
        self.path = "/sandbox/ticket?appid=" + urllib.parse.quote(appid)
        self.first_seen = {}
        self.lock = threading.Lock()

    def poll(self):
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=2)
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                ticket = json.loads(body)["ticket"]
                with self.lock:
                    self.first_seen.setdefault(ticket, time.time())
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass  # the next poll comes in 0.2 s; a missed ticket shows as unverified
        finally:
            conn.close()

    def snapshot(self):
        with self.lock:
            return dict(self.first_seen)


def verifies(answer, tickets, expires_in):
    """Whether a signing answer is correct for one of the known tickets."""
    try:
        nonce, stamp, url = answer["nonceStr"], int(answer["timestamp"]), answer["url"]
        signature = answer["signature"]
    except (KeyError, TypeError, ValueError):
        return False
    if url != PAGE:
        return False
    for ticket, seen in tickets.items():
        plain = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={stamp}&url={url}"
        if hashlib.sha1(plain.encode()).hexdigest() == signature:
            # Seconds are truncated; a ticket was minted at most one poll before `seen`.
            return stamp <= seen + expires_in
    return False


class Worker(threading.Thread):
    def __init__(self, target, rate, deadline, results):
        super().__init__(daemon=True)
        self.target = target
        self.url = urllib.parse.urlsplit(target)
        self.interval = 1.0 / rate
        self.deadline = deadline
        self.results = results
        self.conn = None

    def connect(self):
        self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=5)

    def run(self):
        next_at = time.time()
        while True:
            now = time.time()
            if now >= self.deadline:
                break
            if next_at > now:
                time.sleep(next_at - now)
            # A fixed schedule: a slow answer is not made up for with a burst afterwards.
            next_at = max(next_at + self.interval, time.time())
            self.one_request()
        if self.conn:
            self.conn.close()

    def one_request(self):
        if self.conn is None:
            self.connect()
        start = time.time()
        try:
            self.conn.request("GET", PATH)
            resp = self.conn.getresponse()
            body = resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as err:
            self.conn.close()
            self.conn = None
            self.results.record(self.target, start, time.time(), f"conn:{type(err).__name__}", None)
            return
        self.results.record(self.target, start, time.time(), status, body if status == 200 else None)


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_target = {}
        self.failures = []  # (start, end, target, status)
        self.answers = []  # (end, parsed 200 body), checked by the main thread
        self.first_ok = None

    def record(self, target, start, end, status, body):
        with self.lock:
            self.by_target.setdefault(target, Counter())[str(status)] += 1
            if status == 200:
                self.first_ok = self.first_ok or end
                try:
                    self.answers.append(json.loads(body))
                except ValueError:
                    self.answers.append(None)
            elif not (isinstance(status, int) and 200 <= status < 300):
                self.failures.append((start, end, target, str(status)))

    def take_answers(self):
        with self.lock:
            taken, self.answers = self.answers, []
            return taken


def read_windows(path):
    windows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                label, start, end, target, kinds = line.split()
                windows.append((label, float(start), float(end), target, kinds.split(",")))
    except FileNotFoundError:
        pass
    return windows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", required=True, help="comma-separated base URLs")
    ap.add_argument("--rate", type=float, required=True, help="requests/s over all targets")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--sandbox", required=True)
    ap.add_argument("--appid", required=True)
    ap.add_argument("--expires-in", type=float, required=True)
    ap.add_argument("--windows-file", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    targets = args.targets.split(",")
    tickets = Tickets(args.sandbox, args.appid)
    results = Results()
    deadline = time.time() + args.duration
    workers = [Worker(t, args.rate / len(targets), deadline, results) for t in targets]
    for w in workers:
        w.start()

    checked = unverified_early = 0
    pending = []  # answers no known ticket explained yet
    while any(w.is_alive() for w in workers):
        tickets.poll()
        known = tickets.snapshot()
        for answer in results.take_answers():
            checked += 1
            if not verifies(answer, known, args.expires_in):
                pending.append(answer)
        time.sleep(0.2)
    for w in workers:
        w.join(timeout=10)
    tickets.poll()
    known = tickets.snapshot()
    for answer in results.take_answers():
        checked += 1
        if not verifies(answer, known, args.expires_in):
            pending.append(answer)
    unverified_early = len(pending)
    pending = [a for a in pending if not verifies(a, known, args.expires_in)]

    windows = read_windows(args.windows_file)
    inside, outside = Counter(), []
    for start, end, target, status in results.failures:
        kind = "conn" if status.startswith("conn:") else status
        label = next(
            (
                w[0]
                for w in windows
                if kind in w[4] and start <= w[2] and end >= w[1] and w[3] in ("*", target)
            ),
            None,
        )
        if label:
            inside[f"{label} {status}"] += 1
        else:
            outside.append({"at": round(end, 3), "target": target, "status": status})

    total = sum(sum(c.values()) for c in results.by_target.values())
    summary = {
        "total": total,
        "by_target": {t: dict(c) for t, c in results.by_target.items()},
        "non_2xx_inside_windows": dict(inside),
        "non_2xx_outside_windows": len(outside),
        "outside_examples": outside[:20],
        "answers_200_checked": checked,
        "answers_200_unverified": len(pending),
        "answers_200_verified_only_after_last_poll": unverified_early - len(pending),
        "tickets_seen": len(known),
        "first_ok_at": results.first_ok,
        "windows": windows,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    ok = not outside and not pending and checked > 0 and all(not w.is_alive() for w in workers)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
