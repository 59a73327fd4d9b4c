#!/usr/bin/python3
"""Hostile HTTP clients for the connection-starvation tests (test_hostile.py).

    attack.py --target HOST:PORT --mode MODE --conns N --sources A,B,... --seconds S [--path P]

Holds N connections to the target from the given source addresses (loopback
aliases such as 127.0.0.2: each stands for another machine) for S seconds,
then closes everything and prints one JSON line of what happened. Modes:

  trickle   a request line, then one more header line every --every seconds
            (the head never completes)
  bare      connect and send nothing
  slowbody  a complete head for --path with a large Content-Length, then one
            body byte every --every seconds

A connection the server closes is opened again --every seconds later, so the
pressure lasts. The run is bounded: it ends by itself after --seconds.
"""
import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--mode", choices=("trickle", "bare", "slowbody"), required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--sources", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[])
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    sources = a.sources.split(",")
    sel = selectors.DefaultSelector()
    conns = {}  # sock -> [source, next_send_time]
    stats = {"connects": 0, "connect_errors": 0, "closed_by_server": 0, "bytes_sent": 0, "peak_open": 0,
             "replies": {}}
    end = time.monotonic() + a.seconds

    def head():
        extra = "".join(f"{h}\r\n" for h in a.header)
        if a.mode == "slowbody":
            return (f"POST {a.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n{extra}\r\n").encode()
        if a.mode == "trickle":
            return f"GET {a.path} HTTP/1.1\r\nHost: x\r\n{extra}".encode()
        return b""

    def open_one(i):
        src = sources[i % len(sources)]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, "connect")
        except OSError:
            stats["connect_errors"] += 1
            s.close()
            return
        stats["connects"] += 1
        conns[s] = [i, time.monotonic(), True]  # index, next send, head pending
        sel.register(s, selectors.EVENT_READ)

    def close_one(s, by_server):
        i = conns.pop(s)[0]
        sel.unregister(s)
        s.close()
        if by_server:
            stats["closed_by_server"] += 1
        return i

    for i in range(a.conns):
        open_one(i)
        if i % 200 == 199:
            time.sleep(0.05)  # let the accept queue drain
    reopen = []
    while time.monotonic() < end:
        stats["peak_open"] = max(stats["peak_open"], len(conns))
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                code = line.split(" ")[1] if line.startswith("HTTP/") and " " in line else "?"
                stats["replies"][code] = stats["replies"].get(code, 0) + 1
                continue
            reopen.append((time.monotonic() + a.every, close_one(s, True)))
        now = time.monotonic()
        for s, st in list(conns.items()):
            if now < st[1]:
                continue
            st[1] = now + a.every
            try:
                if st[2]:
                    st[2] = False
                    b = head()
                elif a.mode == "trickle":
                    b = f"X-Slow-{int(now * 1000) % 100000}: a\r\n".encode()
                elif a.mode == "slowbody":
                    b = b"x"
                else:
                    b = b""
                if b:
                    stats["bytes_sent"] += s.send(b)
            except OSError:
                reopen.append((now + a.every, close_one(s, True)))
        later = []
        for when, i in reopen:
            if when <= now and time.monotonic() < end:
                open_one(i)
            else:
                later.append((when, i))
        reopen = later
    stats["open_at_end"] = len(conns)
    for s in list(conns):
        close_one(s, False)
    print(json.dumps(stats))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
