#!/usr/bin/python3
"""A small real web application for the proxy tests (tests/integration/
test_proxy*.py) and bench/proxy.py: ThreadingHTTPServer (HTTP/1.1,
keep-alive) reading and writing a SQLite database on a LiteFS mount.

    proxy_app.py PORT DBPATH NAME

Every answer names the node that served it (X-Node: NAME).

    GET  /read            {"n": rows, "last": last value}
    POST .../write        inserts the body as a row; {"id": rowid}
    GET  /touch           a GET that writes (a session extension): on a
                          replica SQLite says "attempt to write a readonly
                          database" and the app answers 503 with
                          `Litefs-Replay: primary` (docs/proxy.md)
    POST /upload          reads the body (Content-Length or chunked) as it
                          comes; {"bytes": n, "sha256": hex}
    GET  /sse             three server-sent events 300 ms apart (chunked)
    GET  /ws, /always/ws  WebSocket echo (text and binary frames, close)
    GET  /crash           promises 1000 bytes, sends 10, drops the socket
    GET  /die             drops the socket without answering
    GET  /small           "ok" (the benchmark's request)
    anything else         {"path": path, "method": method}
"""
import base64
import hashlib
import json
import socket
import sqlite3
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


PORT = DB = NAME = None


def db():
    return sqlite3.connect(DB, timeout=10, isolation_level=None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer, sent at once (otherwise head and body go in
    # two writes and Nagle + delayed ACK add 40 ms to each request).
    wbufsize = 65536
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def reply(self, status, obj=None, headers=(), body=None):
        data = body if body is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("X-Node", NAME)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_n(self, left):
        """The next left bytes of the body, in pieces of at most 64 KiB."""
        while left:
            b = self.rfile.read(min(left, 65536))
            if not b:
                raise ConnectionError("body ended early")
            left -= len(b)
            yield b

    def body_chunks(self):
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            yield from self.read_n(int(self.headers.get("Content-Length") or 0))
            return
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield from self.read_n(size)
            self.rfile.readline()

    def do_GET(self):
        return self.replayable(self.get)

    def do_POST(self):
        return self.replayable(self.post)

    def replayable(self, handler):
        """The middleware of docs/proxy.md: a write refused because this
        node cannot write (a replica, or a primary fenced by a handoff)
        asks the proxy to replay the request on the primary. A fenced
        commit can also surface as SQLITE_IOERR on a connection that was
        already writing; LiteFS refused it, so it is replayable too."""
        try:
            return handler()
        except sqlite3.OperationalError as e:
            if "readonly" in str(e) or "disk I/O error" in str(e):
                return self.reply(503, {"error": str(e)}, headers=[("Litefs-Replay", "primary")])
            raise

    def get(self):
        p = self.path.split("?")[0]
        if p == "/small":
            return self.reply(200, body=b"ok")
        if p == "/read":
            c = db()
            n, last = c.execute("SELECT count(*), max(v) FROM t").fetchone()
            c.close()
            return self.reply(200, {"n": n, "last": last})
        if p == "/touch":
            c = db()
            try:
                c.execute("INSERT INTO t(v) VALUES ('touch')")
            finally:
                c.close()
            return self.reply(200, {"touched": True})
        if p == "/sse":
            self.send_response(200)
            self.send_header("X-Node", NAME)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                ev = f"data: event {i} {time.time():.3f}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        if p in ("/ws", "/always/ws"):
            return self.websocket()
        if p == "/die":  # no answer at all
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if p == "/crash":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        return self.reply(200, {"path": self.path, "method": self.command})

    do_HEAD = do_GET

    def post(self):
        p = self.path.split("?")[0]
        if p == "/upload":
            h, n = hashlib.sha256(), 0
            for b in self.body_chunks():
                h.update(b)
                n += len(b)
            return self.reply(200, {"bytes": n, "sha256": h.hexdigest()})
        body = b"".join(self.body_chunks())
        if p.endswith("/write"):
            c = db()
            try:
                cur = c.execute("INSERT INTO t(v) VALUES (?)", (body.decode(),))
            finally:
                c.close()
            return self.reply(200, {"id": cur.lastrowid})
        return self.reply(200, {"path": self.path, "method": self.command, "bytes": len(body)})

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("X-Node", NAME)
        self.end_headers()
        self.wfile.flush()
        while True:
            op, data = ws_read(self.rfile)
            if op is None or op == 8:
                self.wfile.write(ws_frame(8, b"", mask=False))
                break
            self.wfile.write(ws_frame(op, data, mask=False))
            self.wfile.flush()
        self.close_connection = True


def ws_frame(op, data, mask=True):
    """One final frame; clients mask, servers do not (RFC 6455)."""
    n = len(data)
    head = bytes([0x80 | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        head += key
    return head + data


def ws_read(f):
    """(opcode, payload) of one frame, (None, b"") at EOF."""
    h = f.read(2)
    if len(h) < 2:
        return None, b""
    op, n = h[0] & 0x0F, h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    key = f.read(4) if h[1] & 0x80 else None
    data = f.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return op, data


if __name__ == "__main__":
    PORT, DB, NAME = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass  # a client that resets its connection (wrk at its end) is not news
    Server(("127.0.0.1", PORT), Handler).serve_forever()
