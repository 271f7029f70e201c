"""Family: deadlines. A server that drips its reply is cut off at the request's total deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from ed_agents.deadline import deadline_client
from ed_agents.llm import make_chat_model
from ed_common.settings import Settings


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """Answers every request with valid headers, then one body byte every 0.1 s for 30 s."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                body = b'{"choices": []}' + b" " * 300
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                conn.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode())
                for i in range(len(body)):
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(body[i : i + 1])
                    except OSError:
                        break
                    time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    sock.close()


def test_a_dripping_response_fails_at_the_total_deadline(dripping_server: str) -> None:
    client = deadline_client(1.0)  # every single read arrives well within 1 s: only a total deadline helps
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="longer than the deadline"):
        client.get(dripping_server).read()
    assert time.monotonic() - start < 5  # not the 30 s the server would take


def test_the_chat_model_uses_the_deadline(dripping_server: str) -> None:
    settings = Settings(llm_base_url=f"{dripping_server}/v1", llm_timeout_s=1.0)
    model = make_chat_model(settings)
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        model.invoke("hello")
    assert time.monotonic() - start < 5
