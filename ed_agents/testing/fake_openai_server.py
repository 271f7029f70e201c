"""A deterministic fake OpenAI-compatible chat server for tests and benchmarks (stdlib only).

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain or SSE-streamed) without any model:

* ``response_format`` of type ``json_schema``: the reply is a JSON object generated from the schema, so it
  validates against it. Strings are words drawn (seeded by the request's ``seed`` and the property path) from
  the last user message, so different prompts give different replies. A string property named
  ``final_prompt`` starts with the text of the user's ``<user_prompt>...</user_prompt>`` block, when there is
  one, so callers' "keep the user's content" logic can be exercised.
* ``{"type": "json_object"}`` or no ``response_format``: if the system message has a ``JSON schema:`` marker
  line followed by a schema, the reply is prose with a generated object embedded in a ```json fence (to
  exercise JSON extraction); otherwise a short sentence built from the user's words.
* ``fail_json_first=N``: the first N chat requests get ``{not json`` (to exercise repair retries).
* ``delay=S``: each chat request sleeps S seconds; requests are served concurrently, one thread each.

Use it in-process::

    with FakeOpenAIServer(delay=0.1) as server:
        llm = ChatOpenAI(base_url=server.base_url, api_key="EMPTY", model="smollm2")

or as a process: ``python -m ed_agents.testing.fake_openai_server --port 8099 [--delay 0.2]
[--fail-json-first 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

__all__ = ["BROKEN_JSON", "FakeOpenAIServer", "fake_reply_content", "generate_from_schema", "main"]

BROKEN_JSON = "{not json"
"""What the first ``fail_json_first`` chat requests receive as content."""

DEFAULT_MODEL = "smollm2"
# Only loopback: this server has no auth and must never be reachable from outside the machine.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_FALLBACK_WORDS = ("quiet", "light", "over", "the", "scene")
# Recursive schemas (a node containing nodes) would otherwise recurse forever: past this depth, only required
# properties, minItems items and the null branch of optional values are generated.
_MAX_DEPTH = 6
_HARD_DEPTH = 40

_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")
_WORDS = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_USER_PROMPT = re.compile(r"<user_prompt>(.*?)</user_prompt>", re.DOTALL)
_SCHEMA_MARKER = re.compile(r"^[ \t]*JSON schema:[ \t]*", re.MULTILINE)


# ----------------------------------------------------------------------------------------------------
# Reply generation (pure functions, usable without the HTTP server)
# ----------------------------------------------------------------------------------------------------


def _message_text(message: dict[str, Any]) -> str:
    """Return the text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """Return the last user message's text (all messages' text when there is no user message)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _message_text(message)
    return "\n".join(_message_text(m) for m in messages)


def _words_of(text: str) -> list[str]:
    """Return the words of ``text`` (markup tags dropped, so ``<user_prompt>`` does not become a word)."""
    return _WORDS.findall(_TAG.sub(" ", text)) or list(_FALLBACK_WORDS)


class _SchemaFaker:
    """Builds one value that validates against a JSON schema (the subset pydantic and LLM callers produce)."""

    def __init__(self, root: dict[str, Any], words: list[str], seed: int, user_prompt: str | None) -> None:
        self._root = root
        self._words = words
        self._seed = seed
        self._user_prompt = user_prompt

    def _rng(self, path: str) -> random.Random:
        # A string seed is hashed with sha512 by `random`, so the choice is stable across processes.
        return random.Random(f"{self._seed}:{path}")

    def _phrase(self, path: str, low: int = 3, high: int = 6) -> str:
        rng = self._rng(path)
        return " ".join(rng.choice(self._words) for _ in range(rng.randint(low, high)))

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Inline ``$ref`` (JSON pointer into the root schema) and flatten ``allOf``; sibling keys win."""
        seen = 0
        while "$ref" in schema:
            ref = str(schema["$ref"])
            if not ref.startswith("#"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            target: Any = self._root
            for part in filter(None, ref[1:].split("/")):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings}
            seen += 1
            if seen > _HARD_DEPTH:
                raise ValueError(f"$ref cycle at {ref!r}")
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for branch in schema["allOf"]:
                sub = self._resolve(branch)
                merged.setdefault("properties", {}).update(sub.get("properties", {}))
                merged["required"] = sorted({*merged.get("required", []), *sub.get("required", [])})
                for key, value in sub.items():
                    if key not in ("properties", "required"):
                        merged.setdefault(key, value)
            schema = merged
        return schema

    def make(self, schema: dict[str, Any] | bool, name: str, path: str, depth: int = 0) -> Any:
        """Return a value valid for ``schema``.

        Args:
            schema: The (sub)schema.
            name: The property name this value is for ("" for array items and the root).
            path: A dotted path naming this value; with the request seed it seeds the random choices.
            depth: Nesting depth, to stop recursive schemas.

        Returns:
            A JSON-compatible value.
        """
        if depth > _HARD_DEPTH:
            raise ValueError(f"schema nests deeper than {_HARD_DEPTH} levels at {path!r}")
        if schema is True or schema == {}:
            return self._phrase(path)
        if schema is False:
            raise ValueError(f"schema at {path!r} is `false`: no value validates")
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._rng(path).choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._make_union(schema[key], name, path, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            if not non_null or (depth >= _MAX_DEPTH and "null" in kind):
                return None
            kind = non_null[0]
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        maker = {
            "object": self._make_object,
            "array": self._make_array,
            "string": self._make_string,
            "integer": self._make_integer,
            "number": self._make_number,
        }.get(kind)
        if maker is not None:
            return maker(schema, name, path, depth)
        if kind == "boolean":
            return self._rng(path).random() < 0.5
        if kind == "null":
            return None
        raise ValueError(f"unsupported schema type {kind!r} at {path!r}")

    def _make_union(self, branches: list[Any], name: str, path: str, depth: int) -> Any:
        resolved = [self._resolve(b) if isinstance(b, dict) else b for b in branches]
        non_null = [b for b in resolved if not (isinstance(b, dict) and b.get("type") == "null")]
        if not non_null or (depth >= _MAX_DEPTH and len(non_null) < len(resolved)):
            return None
        return self.make(non_null[0], name, path, depth)

    def _make_object(self, schema: dict[str, Any], name: str, path: str, depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        out: dict[str, Any] = {}
        for prop, sub in properties.items():
            if depth >= _MAX_DEPTH and prop not in required:
                continue
            out[prop] = self.make(sub, prop, f"{path}.{prop}" if path else prop, depth + 1)
        return out

    def _make_array(self, schema: dict[str, Any], name: str, path: str, depth: int) -> list[Any]:
        prefix: list[Any] = schema.get("prefixItems", [])
        low = int(schema.get("minItems", 0))
        count = max(low, len(prefix), 2 if depth < _MAX_DEPTH else 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", True)
        if not prefix and items is False:
            count = 0
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.make(sub, "", f"{path}[{i}]", depth + 1))
        return out

    def _make_string(self, schema: dict[str, Any], name: str, path: str, depth: int) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2024-01-01T12:00:00Z"
        if fmt == "date":
            return "2024-01-01"
        if fmt == "time":
            return "12:00:00"
        if fmt == "uuid":
            return str(_uuid_from(self._rng(path)))
        if fmt == "email":
            return f"{self._rng(path).choice(self._words).lower()}@example.com"
        if fmt in ("uri", "url"):
            return f"https://example.com/{self._rng(path).choice(self._words).lower()}"
        text = self._phrase(path)
        if name == "final_prompt" and self._user_prompt is not None:
            text = f"{self._user_prompt}, {self._phrase(path, 2, 4)}"
        min_len = int(schema.get("minLength", 0))
        pad = 0
        while len(text) < min_len:
            text = f"{text} {self._phrase(f'{path}+{pad}')}"
            pad += 1
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
            # A cut can leave a trailing space; keep it only if the rstripped text would be too short.
            if len(text.rstrip()) >= min_len:
                text = text.rstrip()
        return text

    def _make_integer(self, schema: dict[str, Any], name: str, path: str, depth: int) -> int:
        low, high = _bounds(schema, integer=True)
        step = int(schema.get("multipleOf", 1)) or 1
        first = math.ceil(low / step) * step  # smallest multiple of step >= low
        choices = range(first, math.floor(high) + 1, step)
        return self._rng(path).choice(choices) if choices else first

    def _make_number(self, schema: dict[str, Any], name: str, path: str, depth: int) -> float:
        low, high = _bounds(schema, integer=False)
        value = round(low + (high - low) * self._rng(path).random(), 3)
        return value if low <= value <= high else (low + high) / 2


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    """Return the inclusive ``[low, high]`` range allowed by minimum/maximum/exclusive* (default 0..10)."""
    nudge = 1 if integer else 1e-3
    low: float | None = schema.get("minimum")
    high: float | None = schema.get("maximum")
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        low = schema["exclusiveMinimum"] + nudge
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
        high = schema["exclusiveMaximum"] - nudge
    if low is None:
        low = min(0, high - 10) if high is not None else 0
    if high is None:
        high = low + 10
    return low, max(low, high)


def _uuid_from(rng: random.Random) -> str:
    hexdigits = f"{rng.getrandbits(128):032x}"
    return f"{hexdigits[:8]}-{hexdigits[8:12]}-4{hexdigits[13:16]}-a{hexdigits[17:20]}-{hexdigits[20:]}"


def generate_from_schema(schema: dict[str, Any], user_text: str, seed: int = 0) -> Any:
    """Generate a value valid for ``schema`` from the words of ``user_text``.

    Args:
        schema: A JSON schema (``$ref`` into its own ``$defs``/``definitions`` is resolved).
        user_text: The user message; its words fill strings, its ``<user_prompt>`` block starts
            ``final_prompt`` strings.
        seed: Seeds the word choices together with each property path.

    Returns:
        A JSON-compatible value.

    Raises:
        ValueError: The schema uses something this generator does not support.
    """
    match = _USER_PROMPT.search(user_text)
    user_prompt = match.group(1).strip() if match else None
    return _SchemaFaker(schema, _words_of(user_text), seed, user_prompt).make(schema, "", "")


def _schema_after_marker(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the JSON schema that follows a ``JSON schema:`` line in a system message, if any."""
    for message in messages:
        if message.get("role") not in ("system", "developer"):
            continue
        text = _message_text(message)
        marker = _SCHEMA_MARKER.search(text)
        if marker is None:
            continue
        start = text.find("{", marker.end())
        if start < 0:
            continue
        try:
            schema, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(schema, dict):
            return schema
    return None


def fake_reply_content(body: dict[str, Any]) -> str:
    """Return the assistant content the fake server gives for a chat-completions request body.

    Args:
        body: The request JSON.

    Returns:
        The reply text (without the ``fail_json_first`` breakage, which the server applies).

    Raises:
        ValueError: The request's schema is not supported.
    """
    messages: list[dict[str, Any]] = body.get("messages") or []
    seed = body.get("seed")
    seed = seed if isinstance(seed, int) else 0
    user_text = _last_user_text(messages)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        return json.dumps(generate_from_schema(schema, user_text, seed), ensure_ascii=False)
    schema = _schema_after_marker(messages)
    if schema is not None:
        obj = generate_from_schema(schema, user_text, seed)
        return f"Sure! ```json\n{json.dumps(obj, ensure_ascii=False, indent=2)}\n``` hope this helps"
    rng = random.Random(f"{seed}:reply")
    words = _words_of(user_text)
    return f"Here is a thought about {' '.join(rng.choice(words) for _ in range(8))}."


def _word_count(text: str) -> int:
    return len(text.split())


# ----------------------------------------------------------------------------------------------------
# HTTP server
# ----------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server; SSE replies close the connection
    timeout = 30  # idle keep-alive connections do not hold a thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: tests and benchmarks read their own output."""

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    def do_GET(self) -> None:
        """Serve the model list (and ``/health``, like llama.cpp's server)."""
        route = self._route()
        if route in ("/v1/models", "/models"):
            model = self.server.fake.model
            card = {"id": model, "object": "model", "created": 0, "owned_by": "fake-openai-server"}
            self._send_json(200, {"object": "list", "data": [card]})
        elif route == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error(404, f"no route GET {route}")

    def do_POST(self) -> None:
        """Serve chat completions."""
        route = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if route not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error(404, f"no route POST {route}")
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send_error(400, f"request body is not JSON: {exc}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error(400, "request body must be an object with a `messages` list")
            return
        fake = self.server.fake
        index = fake._record(body)
        if fake.raw_reply is not None:  # a broken server or proxy: HTTP 200 with any body at all
            payload, content_type = fake.raw_reply
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fake.delay > 0:
            with fake.in_flight():
                time.sleep(fake.delay)
        try:
            content = BROKEN_JSON if index < fake.fail_json_first else fake_reply_content(body)
        except (ValueError, KeyError, TypeError) as exc:
            self._send_error(500, f"fake server could not build a reply: {exc}", "server_error")
            return
        prompt_tokens = sum(_word_count(_message_text(m)) for m in body["messages"] if isinstance(m, dict))
        completion_tokens = _word_count(content)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        model = str(body.get("model") or fake.model)
        reply_id = f"chatcmpl-fake-{index}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_stream(reply_id, created, model, content, usage if include_usage else None)
            return
        self._send_json(
            200,
            {
                "id": reply_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _send_stream(
        self, reply_id: str, created: int, model: str, content: str, usage: dict[str, int] | None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # No length and no chunked encoding: the end of the stream is the end of the connection.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model}
        chunks: list[dict[str, Any]] = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
                ],
            },
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if usage is not None:
            chunks.append({**base, "choices": [], "usage": usage})
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeOpenAIServer:
    """An in-process fake OpenAI-compatible server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail_json_first: int = 0,
        raw_reply: tuple[bytes, str] | None = None,
        model: str = DEFAULT_MODEL,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure (not start) the server.

        Args:
            delay: Seconds each chat request sleeps before answering.
            fail_json_first: How many of the first chat requests get broken JSON.
            raw_reply: ``(body, content type)`` every chat request gets with HTTP 200 instead of a completion.
            model: The model id ``/v1/models`` lists (and replies name when the request has none).
            host: ``127.0.0.1`` or ``localhost``; nothing else, the server has no auth.
            port: The port; 0 picks a free one.

        Raises:
            ValueError: ``host`` is not loopback.
        """
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(
                f"the fake server binds loopback only ({', '.join(_LOOPBACK_HOSTS)}), not {host!r}"
            )
        self.delay = delay
        self._in_flight = 0
        self.max_in_flight = 0
        self.fail_json_first = fail_json_first
        self.raw_reply = raw_reply
        self.model = model
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        return self._server.server_address[1] if self._server is not None else self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the chat request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request as being handled (``max_in_flight`` proves concurrency without timing)."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record(self, body: dict[str, Any]) -> int:
        """Store a chat request body and return its 0-based arrival index."""
        with self._lock:
            self._requests.append(body)
            return len(self._requests) - 1

    def start(self) -> str:
        """Bind and serve in a background thread.

        Returns:
            The base URL.
        """
        if self._server is not None:
            return self.base_url
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._server = server
        # A short poll interval keeps stop() fast (shutdown waits for the serve loop to notice).
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._port = server.server_address[1]
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the fake server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="Deterministic fake OpenAI-compatible chat server.")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", choices=_LOOPBACK_HOSTS, help="loopback only")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model id listed by /v1/models")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per chat request")
    parser.add_argument(
        "--fail-json-first", type=int, default=0, help="the first N chat requests get broken JSON"
    )
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        delay=args.delay,
        fail_json_first=args.fail_json_first,
        model=args.model,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_sigterm)
    base_url = server.start()
    print(f"fake OpenAI server listening on {base_url}", flush=True)  # noqa: T201  (a script's one line)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
