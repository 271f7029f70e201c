"""Chat sessions: a named thread on a SQLite checkpointer, with steering, history and undo (time travel)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from ed_agents.context import Context
from ed_agents.errors import InvalidInputError
from ed_agents.state import HistoryEntry
from ed_common.emotions import Emotion
from ed_common.errors import EmodirError
from ed_common.render_contract import RenderOptions
from graphs.emotion_director import build_graph
from graphs.state import GraphInput

# Exactly the types our state holds: the checkpoint loader refuses anything else (no arbitrary classes).
# langgraph.json's checkpointer.serde.allowed_msgpack_modules repeats it (a unit test keeps the two equal).
STATE_TYPES: list[tuple[str, str]] = [
    ("ed_common.emotions", "Emotion"),
    ("ed_common.render_contract", "RenderOptions"),
    ("ed_common.render_contract", "VisualPromptChoice"),
    ("graphs.state", "RenderOptions"),  # where sessions saved before the render contract moved found it
    *(
        ("ed_agents.state", name)
        for name in (
            "PersonaReaction",
            "ConceptChain",
            "VisualConcepts",
            "UsedIdea",
            "PromptPhrase",
            "TraceEntry",
            "HistoryEntry",
        )
    ),
]


MAX_SESSION_NAME = 64
_SESSION_NAME = re.compile(rf"\w[\w.-]{{0,{MAX_SESSION_NAME - 1}}}")


class SessionBusyError(EmodirError):
    """Another process has the session open: two REPLs on one thread would interleave and lose turns."""


def check_session_name(name: str) -> str:
    """``name`` if it can name a session: short, letters, digits, ``.``, ``_`` and ``-``.

    Raises:
        InvalidInputError: naming the value (shortened) and what is allowed.
    """
    if not _SESSION_NAME.fullmatch(name):
        shown = name if len(name) <= 40 else f"{name[:40]}... ({len(name)} characters)"
        raise InvalidInputError(
            f"session name {shown!r} is not allowed; allowed: 1-{MAX_SESSION_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


@contextmanager
def session_lock(db: Path, name: str) -> Iterator[None]:
    """Hold session ``name`` of ``db`` for this process (an advisory lock, released when it ends).

    Raises:
        SessionBusyError: another process holds it (names its pid).
    """
    locks = db.parent / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # The file name is a digest: any session name (even one stored before names were checked) maps to a
    # safe, bounded file name.
    path = locks / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SessionBusyError(
                f"session {name!r} is open in another `emodir chat` (pid {holder}); close that one or "
                "choose another --session"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            with suppress(OSError):
                handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_serde() -> JsonPlusSerializer:
    """The checkpoint serializer, limited to our state's own types."""
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


class SessionStoreError(EmodirError):
    """The sessions database cannot be read (not a database, damaged, locked or read-only)."""


def _check_store(conn: sqlite3.Connection, db: Path) -> None:
    # sqlite3.connect accepts any file; the first statement is where a damaged one fails. Ask now, so the
    # error names the file instead of surfacing mid-run from inside the checkpointer.
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SessionStoreError(
            f"the session store {db} cannot be used ({exc}); move it aside to start with no sessions"
        ) from None


@contextmanager
def open_checkpointer(db: Path) -> Iterator[SqliteSaver]:
    """A SQLite checkpointer on ``db`` (created with its folder if missing).

    Raises:
        SessionStoreError: ``db`` exists but is not a usable SQLite database.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    # Persona branches run in worker threads and all write checkpoints: allow cross-thread use
    # (SqliteSaver serialises access with its own lock).
    conn = sqlite3.connect(db, check_same_thread=False)
    _check_store(conn, db)
    try:
        yield SqliteSaver(conn, serde=make_serde())
    finally:
        conn.close()


def list_sessions(db: Path) -> list[str]:
    """Names of the sessions stored in ``db`` (empty if there is no database yet).

    Raises:
        SessionStoreError: ``db`` exists but is not a usable SQLite database.
    """
    if not db.is_file():
        return []
    conn = sqlite3.connect(db)
    _check_store(conn, db)
    try:
        rows = conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id").fetchall()
    except sqlite3.OperationalError:  # a database without our tables yet
        return []
    finally:
        conn.close()
    return [r[0] for r in rows]


class ChatSession:
    """One named conversation: each turn is a graph run on the session's thread."""

    def __init__(self, saver: SqliteSaver, context: Context, name: str) -> None:
        self.graph = build_graph(checkpointer=saver)
        self.context = context
        self.name = name
        self.config: dict[str, Any] = {"configurable": {"thread_id": name}}

    @property
    def values(self) -> dict[str, Any]:
        """The session's current state (empty for a new session)."""
        return dict(self.graph.get_state(self.config).values)

    @property
    def history(self) -> list[HistoryEntry]:
        """Finished runs, oldest first."""
        return list(self.values.get("history", []))

    def run(self, payload: GraphInput) -> Iterator[dict[str, Any]]:
        """Run the graph on this thread, yielding ``{node: update}`` as each node finishes."""
        yield from self.graph.stream(payload, self.config, context=self.context, stream_mode="updates")

    def new_prompt(
        self, user_prompt: str, emotion: Emotion, personas: list[str] | None
    ) -> Iterator[dict[str, Any]]:
        """Start over with a new content prompt (or a new emotion for the same prompt)."""
        return self.run(
            {"user_prompt": user_prompt, "target_emotion": emotion, "personas": personas, "render": None}
        )

    def steer(self, feedback: str) -> Iterator[dict[str, Any]]:
        """Revise the current prompt with one more feedback message.

        Raises:
            InvalidInputError: there is no prompt yet to steer.
        """
        return self._rerun("steer", feedback=[feedback], render=None)

    def render(self, options: RenderOptions) -> Iterator[dict[str, Any]]:
        """Render the current prompt (no agent re-run).

        Raises:
            InvalidInputError: there is no prompt yet to render.
        """
        return self._rerun("render", render=options)

    def _rerun(self, what: str, **extra: Any) -> Iterator[dict[str, Any]]:
        current = self.values
        if not current.get("final_prompt"):
            raise InvalidInputError(f"nothing to {what} yet: give a content prompt first")
        payload: dict[str, Any] = {
            "user_prompt": current["user_prompt"],
            "target_emotion": current["target_emotion"],
            "personas": current.get("personas"),
            **extra,
        }
        return self.run(payload)  # type: ignore[arg-type]

    def undo(self) -> bool:
        """Go back to the state after the previous run (LangGraph time travel); False if there is none.

        The target is the newest finished checkpoint with one history entry fewer than now, so undoing
        twice walks back two runs even though the undone branch stays in the checkpoint history.
        """
        now = len(self.values.get("history", []))
        if now == 0:
            return False
        for snap in self.graph.get_state_history(self.config):
            if snap.next == () and len(snap.values.get("history", [])) == now - 1:
                # "__copy__" writes a new head checkpoint equal to the old one, without re-running nodes.
                self.graph.update_state(snap.config, None, as_node="__copy__")
                return True
        return False
