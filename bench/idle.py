#!/usr/bin/env python3
"""Holds N idle keep-alive connections open to HOST:PORT, for bench/run.sh's scale part.

`python3 bench/idle.py HOST PORT N`: opens N connections, sends one `GET /healthz` on
each and reads the answer, prints `ready N` once all are open, then keeps each alive
with another `/healthz` every 3 s (the service closes a keep-alive connection after
5 s idle, actix's default), until killed. /healthz is not in the access log, so the
pings do not inflate it; at N = 10 000 they cost the instance about 3 300 requests/s.
"""

import asyncio
import random
import sys

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
PING_EVERY = 3.0


async def ping(reader, writer):
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


async def hold(host, port, opened):
    reader, writer = await asyncio.open_connection(host, port)
    await ping(reader, writer)
    opened.release()
    while True:
        await asyncio.sleep(PING_EVERY * random.uniform(0.8, 1.0))
        await ping(reader, writer)


async def main(host, port, n):
    opened = asyncio.Semaphore(0)
    tasks = []
    # In batches, so that the listen backlog does not overflow.
    for i in range(n):
        tasks.append(asyncio.create_task(hold(host, port, opened)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    for _ in range(n):
        await opened.acquire()
    print(f"ready {n}", flush=True)
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
