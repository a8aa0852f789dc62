"""A fault-injecting HTTP proxy on 127.0.0.1 (and a tiny fake chat-completions upstream), for the openai engine's
tests. Faults are chosen by request number (0, 1, 2, ... in arrival order), so a run meets the same faults each
time; a "sticky" fault dooms the body it hits: every later request with the same body fails too (one item that
no retry can save)."""
from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("429", "500", "503", "drop", "truncate", "hang", "sticky500", "echo-key-400", "401")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler never blocks shutdown
    allow_reuse_address = True


class _Base:
    """Serve ``handler_class`` on a free loopback port in a thread, as a context manager."""

    def start(self, handler):
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class FaultProxy(_Base):
    """Forwards to ``upstream`` (a base URL ending in /v1), injecting ``plan[n]`` into request ``n``."""

    def __init__(self, upstream: str, plan: dict[int, str] | None = None, hang_s: float = 4.0,
                 retry_after: str = "1"):
        self.upstream = urlparse(upstream)
        self.plan = dict(plan or {})
        self.hang_s, self.retry_after = hang_s, retry_after
        self.lock = threading.Lock()
        self.count = 0
        self.doomed: set[str] = set()
        self.log: list[tuple[int, str]] = []  # (request number, what happened)
        self.authorizations: set[str] = set()
        self.start(_ProxyHandler)

    def next_fault(self, body: bytes) -> tuple[int, str | None]:
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            n, self.count = self.count, self.count + 1
            fault = self.plan.get(n)
            if fault == "sticky500":
                self.doomed.add(digest)
            if fault is None and digest in self.doomed:
                fault = "sticky500"
            self.log.append((n, fault or "ok"))
        return n, fault

    def forward(self, method: str, path: str, body: bytes, headers) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=300)
        try:
            conn.request(method, path, body=body or None, headers={
                "Content-Type": headers.get("Content-Type", "application/json"),
                "Authorization": headers.get("Authorization", "")})
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("Content-Type", "application/json")
        finally:
            conn.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _error(self, status: int, message: str, extra=None):
        self._send(status, json.dumps({"error": {"message": message, "type": "injected", "code": status}}).encode(),
                   extra=extra)

    def do_GET(self):
        status, body, ctype = self.server.owner.forward("GET", self.path, b"", self.headers)
        self._send(status, body, ctype)

    def do_POST(self):
        proxy: FaultProxy = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy.authorizations.add(self.headers.get("Authorization", ""))
        n, fault = proxy.next_fault(body)
        if fault == "429":
            return self._error(429, "rate limited (injected)", {"Retry-After": proxy.retry_after})
        if fault in ("500", "sticky500"):
            return self._error(500, "internal error (injected)")
        if fault == "401":
            return self._error(401, "invalid api key (injected)")
        if fault == "503":
            return self._error(503, "overloaded (injected)")
        if fault == "echo-key-400":  # as vendors do: the key, echoed back in the error text
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._error(400, f"Incorrect API key provided: {key}. Also seen: {key[:3]}...{key[-12:]}")
        if fault == "drop":
            self.close_connection = True
            return  # no response at all: the client sees the connection closed
        if fault == "hang":
            time.sleep(proxy.hang_s)
            self.close_connection = True
            return
        status, payload, ctype = proxy.forward("POST", self.path, body, self.headers)
        if fault == "truncate":
            payload = payload[: len(payload) // 2]
        self._send(status, payload, ctype)


class FakeUpstream(_Base):
    """A pure-Python chat-completions endpoint: the answer names a digest of the image, usage counts words."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.start(_FakeHandler)

    @staticmethod
    def answer_for(image_url: str) -> str:
        return "<answer>" + hashlib.sha256(image_url.encode()).hexdigest()[:10] + "</answer>"


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
        self._send(body)

    def _send(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.server.owner.lock:
            self.server.owner.requests.append(req)
        image, text = req["messages"][0]["content"]
        answer = FakeUpstream.answer_for(image["image_url"]["url"])
        usage = {"prompt_tokens": len(text["text"].split()), "completion_tokens": 3, "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + 3
        self._send(json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}], "usage": usage}).encode())
