"""An in-process fake chat model that answers each structured call with schema-valid JSON.

By default a reply is generated from the ``response_format`` schema (the same generator as the fake
server). ``script`` overrides by schema name: a string reply, an exception to raise, or a callable
``(messages) -> str``; a list gives one entry per call (the last one repeats). Every call is recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from ed_agents.testing.fake_openai_server import generate_from_schema

Reply = str | BaseException | Callable[[list[BaseMessage]], str]


class SchemaFakeChatModel(BaseChatModel):
    """See the module docstring."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: dict[str, Reply | list[Reply]] = Field(default_factory=dict)
    delay: float = 0.0
    calls: list[dict[str, Any]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _counts: dict[str, int] = PrivateAttr(default_factory=dict)
    _in_flight: int = PrivateAttr(default=0)
    max_in_flight: int = 0

    @property
    def _llm_type(self) -> str:
        return "schema-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        fmt = kwargs.get("response_format") or {}
        spec = fmt.get("json_schema", {}) if isinstance(fmt, dict) else {}
        name = spec.get("name", "text")
        with self._lock:
            n = self._counts.get(name, 0)
            self._counts[name] = n + 1
            self.calls.append({"schema": name, "messages": list(messages), "kwargs": kwargs})
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            reply = self.script.get(name)
            if isinstance(reply, list):
                reply = reply[min(n, len(reply) - 1)]
            if isinstance(reply, BaseException):
                raise reply
            if callable(reply):
                text = reply(messages)
            elif isinstance(reply, str):
                text = reply
            else:
                user = str(messages[-1].content)
                import json

                text = json.dumps(generate_from_schema(spec.get("schema", {}), user, seed=0))
        finally:
            with self._lock:
                self._in_flight -= 1
        msg = AIMessage(text, usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def calls_for(self, schema: str) -> list[dict[str, Any]]:
        """Recorded calls whose requested schema is ``schema``."""
        return [c for c in self.calls if c["schema"] == schema]
