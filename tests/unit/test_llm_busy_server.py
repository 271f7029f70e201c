"""Family: a shared server that stays up. A busy server (slow to answer) is not a dead one."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ed_agents.server_process import served_models


class _Slow(BaseHTTPRequestHandler):
    delay = 3.0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(self.delay)  # a 2-core vLLM generating for four clients answers /v1/models this late
        body = json.dumps({"data": [{"id": "smollm2"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def busy_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_busy_server_is_waited_for_not_declared_dead(busy_server: str) -> None:
    assert served_models(busy_server, timeout=0.5) == ["smollm2"]  # 0.5 s alone would say "down"


def test_patience_is_bounded(busy_server: str) -> None:
    start = time.monotonic()
    assert served_models(busy_server, timeout=0.2, patience=1.0) is None
    assert time.monotonic() - start < 2.5


def test_no_server_at_all_is_known_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    assert served_models(f"http://127.0.0.1:{port}/v1") is None
    assert time.monotonic() - start < 1.0
