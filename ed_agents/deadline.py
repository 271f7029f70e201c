"""A total deadline per HTTP request, for the LLM client.

httpx's timeouts are per operation: a read timeout of 120 s lets a server that sends one byte every
100 s hold a request open for hours. ``DeadlineTransport`` measures each request from its start and fails
it with ``httpx.ReadTimeout`` at the first chunk that arrives after the deadline, so a dripping server
costs about the deadline (at most the deadline plus one read timeout; per attempt, and the client's
retries are bounded too). Headers are read before the body's check starts: a server that drips its
headers is bounded by the read timeout alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, deadline: float, request: httpx.Request) -> None:
        self._inner = inner
        self._deadline = deadline
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout("the response took longer than the deadline", request=self._request)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class DeadlineTransport(httpx.BaseTransport):
    """Wraps a transport so that each request, headers and body, finishes within ``deadline_s``."""

    def __init__(self, deadline_s: float, inner: httpx.BaseTransport | None = None) -> None:
        self._deadline_s = deadline_s
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; its body is read under the deadline counted from now."""
        deadline = time.monotonic() + self._deadline_s
        response = self._inner.handle_request(request)
        if time.monotonic() > deadline:
            response.close()
            raise httpx.ReadTimeout("the response did not arrive within the deadline", request=request)
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):  # a sync transport gives a sync stream
            raise TypeError(f"DeadlineTransport needs a sync transport, got a {type(stream).__name__} body")
        response.stream = _DeadlineStream(stream, deadline, request)
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self._inner.close()


def deadline_client(deadline_s: float) -> httpx.Client:
    """An httpx client whose requests each finish within ``deadline_s`` (reads also time out on their own)."""
    return httpx.Client(transport=DeadlineTransport(deadline_s), timeout=deadline_s)
