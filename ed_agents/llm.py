"""The LLM client: an OpenAI-compatible chat model plus structured calls with repair, retries and tracing.

One code path serves every server: the reply is always read as text and parsed tolerantly, whether the
server enforced a JSON schema (vLLM's ``response_format: json_schema``), only JSON (``json_object``), or
nothing. If the text does not validate, the model gets one repair turn with the validation error.

Designed for the smallest model we ship (SmolLM2-135M): when the server enforces the schema, the prompt
carries no schema text (a small model copies field descriptions instead of answering); the task's worked
example goes first as a user/assistant turn, and a reply that copies that example is not an answer either.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from ed_agents.deadline import deadline_client
from ed_agents.errors import LLMUnavailableError
from ed_agents.prompts import PromptFile
from ed_agents.state import TraceEntry
from ed_common.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
StructuredMode = Literal["json_schema", "json_object", "text"]

# Errors worth retrying: the request may succeed a moment later.
_TRANSIENT: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
    httpx.TransportError,
    TimeoutError,
    ConnectionError,
)
# An HTTP 200 whose body is not a chat completion (a proxy's HTML page, garbage, no ``choices``) surfaces from
# the openai client and langchain as one of these, raised while they read the response.
_MALFORMED: tuple[type[BaseException], ...] = (
    openai.APIResponseValidationError,
    ValueError,  # JSONDecodeError, UnicodeDecodeError, pydantic.ValidationError
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
)
_TIMEOUTS: tuple[type[BaseException], ...] = (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)


def make_chat_model(settings: Settings) -> BaseChatModel:
    """A ``ChatOpenAI`` for the configured OpenAI-compatible server (built at the entry point)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=settings.effective_llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        timeout=settings.llm_timeout_s,
        http_client=deadline_client(settings.llm_timeout_s),  # a total deadline, not one per read
        max_retries=0,  # StructuredLLM retries itself, so the backoff is ours and tested
        seed=settings.seed,
    )


class LLMCallError(Exception):
    """A call that failed for good (after retries and the repair turn); ``trace`` says what happened."""

    def __init__(self, message: str, trace: list[TraceEntry], timed_out: bool = False) -> None:
        super().__init__(message)
        self.trace = trace
        self.timed_out = timed_out


@dataclass
class CallResult(Generic[T]):
    """A validated output and the trace entries of every attempt that produced it."""

    value: T
    trace: list[TraceEntry] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        """Whether the value came from the repair turn rather than the first reply."""
        return any(t.attempt > 1 for t in self.trace)

    @property
    def outcome(self) -> Literal["used", "repaired"]:
        """The stage outcome of a successful call (see ``ed_agents.state.StageOutcome``)."""
        return "repaired" if self.repaired else "used"


CUT_OFF = "reply cut off at max_tokens"
# OpenAI frequency penalty for the second try after a reply ran into max_tokens (measured on SmolLM2-135M:
# 0.5 ends the "a dark, a dark, ..." loops that otherwise fill every bounded field).
LOOP_PENALTY = 0.5

# Longest string the server may generate for one list item; fields bound their own strings.
MAX_ITEM_CHARS = 60


def reply_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema the server enforces: every property required, no extra keys, bounded strings.

    Required because a grammar-constrained small model otherwise takes the shortest way out and omits the
    optional keys (an empty reply is schema-valid); bounded so no field runs on to ``max_tokens``.
    """
    out = schema.model_json_schema()

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            items = node.get("items")
            if isinstance(items, dict) and items.get("type") == "string":
                items.setdefault("maxLength", MAX_ITEM_CHARS)
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(out)
    return out


def schema_instruction(schema: type[BaseModel]) -> str:
    """The trusted, code-made instruction for servers that do not enforce a schema (json_object, text)."""
    compact = json.dumps(schema.model_json_schema(), separators=(",", ":"))
    return (
        "Reply with only one JSON object that matches this JSON schema: no prose, no code fences.\n"
        f"JSON schema:\n{compact}"
    )


def extract_json_object(text: str) -> Any:
    """The first JSON object in ``text`` (code fences and surrounding prose tolerated).

    Raises:
        ValueError: no parseable JSON object in the text.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    raise ValueError("no JSON object found in the reply")


class ExampleCopiedError(ValueError):
    """The reply repeats the task's worked example instead of answering the request."""


def parse_structured(text: str, schema: type[T], example_reply: str | None = None) -> T:
    """Validate the reply ``text`` against ``schema`` tolerantly.

    Raises:
        ValueError: no JSON object, it does not validate (pydantic.ValidationError is a ValueError), it
            copies a field's description instead of answering (small models do; it is not an answer), or
            most of its phrases are the worked example's.
    """
    value = schema.model_validate(extract_json_object(text))
    dumped = value.model_dump()
    copied = _copied_descriptions(dumped, _descriptions(schema.model_json_schema()))
    if copied:
        raise ValueError(f"the reply copies the schema's description of {copied[0]!r} instead of answering")
    if example_reply is not None and copies_example(dumped, example_reply):
        raise ExampleCopiedError("the reply copies the worked example instead of answering for this scene")
    return value


def string_leaves(data: Any) -> list[str]:
    """Every string inside ``data`` (dict values and list items, recursively), in order."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in string_leaves(v)]
    if isinstance(data, list):
        return [s for v in data for s in string_leaves(v)]
    return []


def copies_example(reply: Any, example_reply: str) -> bool:
    """Whether at least half of the reply's words sit in phrases copied from the worked example.

    Phrases are weighed by their words, so a long answer that shares one short phrase with the example
    (a negative prompt of "bright sunshine") is still an answer; one-word phrases never count ("red",
    "two" may well be the right answer).
    """
    try:
        example = {_norm(s) for s in string_leaves(json.loads(example_reply))}
    except json.JSONDecodeError:
        return False
    leaves = [n for n in (_norm(s) for s in string_leaves(reply)) if len(n.split()) >= 2]
    total = sum(len(n.split()) for n in leaves)
    copied = sum(len(n.split()) for n in leaves if n in example)
    return total > 0 and 2 * copied >= total


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _descriptions(schema: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for defs in (schema, *schema.get("$defs", {}).values()):
        for name, prop in defs.get("properties", {}).items():
            if isinstance(prop, dict) and prop.get("description"):
                found[name] = _norm(prop["description"])
    return found


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _copied_descriptions(data: Any, descriptions: dict[str, str], key: str = "") -> list[str]:
    # A string that is (a long prefix of) a field description was copied from the prompt, not written.
    if isinstance(data, str):
        words = _norm(data).split()
        hit = len(" ".join(words)) >= 12 and any(
            _common_prefix(words, d.split()) >= min(len(words), 5) for d in descriptions.values()
        )
        return [key] if hit else []
    if isinstance(data, dict):
        return [k for name, v in data.items() for k in _copied_descriptions(v, descriptions, name)]
    if isinstance(data, list):
        return [k for v in data for k in _copied_descriptions(v, descriptions, key)]
    return []


class StructuredLLM:
    """Structured LLM calls with a concurrency limit, transport retries with backoff and one repair turn."""

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model_name: str,
        structured: StructuredMode = "json_schema",
        max_retries: int = 2,
        backoff_s: float = 0.5,
        concurrency: int = 8,
        base_url: str | None = None,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.chat_model = chat_model
        self.model_name = model_name
        self.structured = structured
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.base_url = base_url
        self.seed = seed
        self._slots = threading.BoundedSemaphore(concurrency)
        self._sleep = sleep

    def call(
        self,
        prompt: PromptFile,
        schema: type[T],
        *,
        node: str,
        run_index: int,
        repair: PromptFile | None = None,
        system_prefix: PromptFile | None = None,
        variables: dict[str, Any],
        json_schema: dict[str, Any] | None = None,
    ) -> CallResult[T]:
        """Render ``prompt``, ask for ``schema``, repair once if the reply does not validate.

        Args:
            prompt: the task file (system part + user part).
            schema: the pydantic model the reply must validate against.
            node: graph node name, for the trace.
            run_index: the run this call belongs to, for the trace.
            repair: task file for the repair turn (user part gets ``error`` and ``bad_output``).
            system_prefix: a persona file whose system text goes before the task's system text.
            variables: template variables for every file involved.
            json_schema: the schema the server enforces, when it is narrower than ``schema``'s own (a
                request's options as an ``enum``); the reply is still validated against ``schema``.

        Raises:
            LLMCallError: the reply was unusable after the repair turn, or the call timed out / failed.
            LLMUnavailableError: the server cannot be reached at all.
        """
        rendered = prompt.render(**variables)
        system = rendered.system
        overrides = prompt.meta.model.model_dump(exclude_none=True)
        if system_prefix is not None:
            system = f"{system_prefix.render(**variables).system}\n\n{system}"
            overrides |= system_prefix.meta.model.model_dump(exclude_none=True)
        if self.seed is not None:
            # One seed per (task, persona): reproducible runs, yet personas do not share a sampler stream.
            key = f"{prompt.id}/{system_prefix.id if system_prefix else ''}"
            overrides["seed"] = self.seed + zlib.crc32(key.encode()) % 100_000
        if self.structured != "json_schema":  # the server will not enforce the shape: say it in words
            system = f"{system}\n\n{schema_instruction(schema)}"
        messages: list[BaseMessage] = [SystemMessage(system)]
        example = prompt.example
        if example is not None:
            messages += [HumanMessage(example.user), AIMessage(example.reply)]
        messages.append(HumanMessage(rendered.user))
        trace: list[TraceEntry] = []
        refs = [prompt]
        for attempt in (1, 2):
            text = self._invoke(
                messages,
                schema,
                overrides,
                node,
                run_index,
                refs[-1],
                attempt,
                trace,
                system_prefix,
                json_schema,
            )
            try:
                reply = parse_structured(text, schema, example.reply if example is not None else None)
                return CallResult(reply, trace)
            except ExampleCopiedError as exc:
                trace[-1] = trace[-1].model_copy(update={"ok": False, "error": f"unusable output: {exc}"})
                if attempt == 2 or repair is None:
                    raise LLMCallError(f"{node}: unusable output after repair: {exc}", trace) from None
                # The example is what got copied: ask again without it (a repair turn would show it again).
                messages = [messages[0], messages[-1]]
                refs.append(prompt)
            except ValueError as exc:
                error = _short_error(exc)
                cut_off = trace[-1].error == CUT_OFF
                earlier = f"{trace[-1].error}; " if trace[-1].error else ""  # e.g. cut off at max_tokens
                trace[-1] = trace[-1].model_copy(
                    update={"ok": False, "error": f"{earlier}unusable output: {error}"}
                )
                if attempt == 2 or repair is None:
                    raise LLMCallError(f"{node}: unusable output after repair: {error}", trace) from None
                if cut_off:
                    # A small model cut off at max_tokens was looping ("a dark, a dark, ..."); a repair turn
                    # after an empty reply gets the worked example copied back. Ask again, penalising repeats.
                    overrides = {**overrides, "frequency_penalty": LOOP_PENALTY}
                    refs.append(prompt)
                    continue
                fix = repair.render(error=error, bad_output=text[:2000], **variables)
                messages = [*messages, AIMessage(text), HumanMessage(fix.user)]
                refs.append(repair)
        raise AssertionError("unreachable")  # pragma: no cover

    def _invoke(
        self,
        messages: list[BaseMessage],
        schema: type[BaseModel],
        overrides: dict[str, Any],
        node: str,
        run_index: int,
        prompt: PromptFile,
        attempt: int,
        trace: list[TraceEntry],
        persona: PromptFile | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {}
        if self.structured == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": json_schema or reply_schema(schema)},
            }
        elif self.structured == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        overrides = dict(overrides)  # the same dict serves the repair attempt: don't consume it
        model_name = overrides.pop("name", None) or self.model_name
        if model_name != self.model_name:
            kwargs["model"] = model_name
        kwargs |= overrides  # temperature / max_tokens from the prompt file
        runnable = self.chat_model.bind(**kwargs) if kwargs else self.chat_model
        ref = prompt.ref
        persona_id = persona.id if persona is not None else None

        def entry(**outcome: Any) -> TraceEntry:
            return TraceEntry(
                run_index=run_index,
                node=node,
                persona_id=persona_id,
                prompt_id=ref.id,
                prompt_version=ref.version,
                prompt_sha256=ref.sha256,
                model=model_name,
                attempt=attempt,
                **outcome,
            )

        delay = self.backoff_s
        for retry in range(self.max_retries + 1):
            start = time.perf_counter()
            try:
                with self._slots:
                    reply = runnable.invoke(messages)
            except openai.LengthFinishReasonError:
                trace.append(entry(latency_s=time.perf_counter() - start, ok=False, error=CUT_OFF))
                return ""  # parsed as unusable -> repair turn
            except _TRANSIENT as exc:
                elapsed = time.perf_counter() - start
                timed_out = isinstance(exc, _TIMEOUTS)
                error = f"{'timeout' if timed_out else type(exc).__name__}: {_short_error(exc)}"
                trace.append(entry(latency_s=elapsed, ok=False, error=error))
                if retry < self.max_retries:
                    log.warning("%s: %s; retrying in %.1fs", node, error, delay)
                    self._sleep(delay)
                    delay *= 2
                    continue
                if not timed_out and _is_refused(exc):
                    raise LLMUnavailableError(
                        f"cannot reach the LLM server at {self.base_url or '?'}; start one with "
                        "`emodir llm serve --detach` or set EMODIR_LLM_BASE_URL"
                    ) from None
                raise LLMCallError(f"{node}: {error}", trace, timed_out=timed_out) from None
            except openai.APIStatusError as exc:  # after _TRANSIENT, which takes 429 and 5xx
                # 400 (e.g. over max_model_len), 401, 404 (unknown model): retrying cannot help.
                error = f"HTTP {exc.status_code}: {_short_error(exc)}"
                trace.append(entry(latency_s=time.perf_counter() - start, ok=False, error=error))
                if exc.status_code in (401, 403, 404):
                    raise LLMUnavailableError(
                        f"the LLM server at {self.base_url or '?'} refused the request for model "
                        f"{model_name!r} ({error})"
                    ) from None
                raise LLMCallError(f"{node}: {error}", trace) from None
            except _MALFORMED as exc:
                detail = f"{type(exc).__name__}: {_short_error(exc)}"
                error = f"not a chat completion ({detail})"
                trace.append(entry(latency_s=time.perf_counter() - start, ok=False, error=error))
                if retry < self.max_retries:  # a proxy's error page can be passing: ask again
                    log.warning("%s: %s; retrying in %.1fs", node, error, delay)
                    self._sleep(delay)
                    delay *= 2
                    continue
                raise LLMUnavailableError(
                    f"the LLM server at {self.base_url or '?'} answered with something that is not an OpenAI "
                    f"chat completion ({detail}); is that an OpenAI-compatible /v1 endpoint?"
                ) from exc  # EMODIR_DEBUG=1 shows where it came from (our bug, or the server's body)
            usage = getattr(reply, "usage_metadata", None) or {}
            trace.append(
                entry(
                    latency_s=time.perf_counter() - start,
                    input_tokens=int(usage.get("input_tokens", 0)),
                    output_tokens=int(usage.get("output_tokens", 0)),
                )
            )
            return _text_of(reply)
        raise AssertionError("unreachable")  # pragma: no cover


def _text_of(reply: Any) -> str:
    content = getattr(reply, "content", reply)
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def _is_refused(exc: BaseException) -> bool:
    # A refused connection means no server at all (fatal); anything else may be the request's fault.
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        refused = isinstance(cur, ConnectionRefusedError | httpx.ConnectError | openai.APIConnectionError)
        if refused and not isinstance(cur, openai.APITimeoutError):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'root'}: {e['msg']}" for e in exc.errors()[:5]
        )
    return " ".join(str(exc).split())[:300]
