"""Prompt files: one Markdown file per persona or task, YAML front-matter + a Jinja2 body.

A body has a *system* part and, for tasks, a *user* part after a line holding only ``<!-- user -->``.
A task that asks for JSON names its reply schema (``output``) and carries one worked example between the
two: ``<!-- example -->`` (a user message, literal text) and ``<!-- reply -->`` (the JSON reply), sent as
a user/assistant turn before the real request, so a small model sees one good answer. The example is part
of the file, so it is versioned and hashed with it, and ``check_prompt_dir`` validates the reply against
the schema.
Variables carrying user text (or LLM text derived from it) are *untrusted*: the validator rejects them
in the system part, and rendering neutralises the angle brackets in their values so user text cannot
close the ``<user_prompt>`` delimiters it is wrapped in. So user text never reaches a system message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import jinja2.sandbox
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ed_agents.errors import InvalidInputError, PromptValidationError
from ed_agents.state import REPLY_SCHEMAS
from ed_common.safe_yaml import load_yaml
from ed_common.user_files import read_user_text

USER_MARKER = "<!-- user -->"
EXAMPLE_MARKER = "<!-- example -->"
REPLY_MARKER = "<!-- reply -->"
# Variables whose values come from the user, or from an LLM reading the user's text.
UNTRUSTED_VARIABLES = frozenset(
    {
        "user_prompt",
        "feedback",
        "anchors",
        "previous_prompt",
        "persona_reactions",
        "concepts",
        "draft_prompt",
        "missing_anchors",
        "bad_output",
        "error",
        "scene",
    }
)
# Sandboxed: prompt files are shared and edited by people, so a template must not reach Python internals.
_ENV = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


class ModelOverrides(BaseModel):
    """Optional per-file overrides of the chat model's sampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Served model name to use for this file's calls.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=16, le=8192)


class FrontMatter(BaseModel):
    """The YAML header of a prompt file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["persona", "task"]
    version: int = Field(ge=1)
    description: str = Field(min_length=1)
    name: str | None = Field(None, description="Display name (personas).")
    variables: list[str] = Field(default_factory=list, description="Variables of the system part.")
    user_variables: list[str] = Field(default_factory=list, description="Variables of the user part.")
    output: str | None = Field(
        None, description=f"Reply schema of a JSON task: one of {', '.join(sorted(REPLY_SCHEMAS))}."
    )
    model: ModelOverrides = Field(default_factory=lambda: ModelOverrides())


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt file: the system message and (tasks only) the user message."""

    system: str
    user: str


@dataclass(frozen=True)
class WorkedExample:
    """A task's worked example: one user message and the JSON reply it should get (both literal)."""

    user: str
    reply: str


@dataclass(frozen=True)
class PromptRef:
    """What the trace records about the prompt file behind an LLM call."""

    id: str
    version: int
    sha256: str


@dataclass(frozen=True)
class PromptFile:
    """A validated prompt file."""

    meta: FrontMatter
    system_template: str
    user_template: str
    path: Path
    sha256: str
    example: WorkedExample | None = None

    @property
    def id(self) -> str:
        """The file's id (equals its stem)."""
        return self.meta.id

    @property
    def ref(self) -> PromptRef:
        """id, version and content hash, for traces and manifests."""
        return PromptRef(self.meta.id, self.meta.version, self.sha256)

    def render(self, **variables: Any) -> RenderedPrompt:
        """Render both parts; untrusted values get their angle brackets neutralised first.

        Raises:
            jinja2.UndefinedError: a variable the template uses was not given.
        """
        safe = {k: (neutralise(v) if k in UNTRUSTED_VARIABLES else v) for k, v in variables.items()}
        system = _ENV.from_string(self.system_template).render(**safe).strip()
        user = _ENV.from_string(self.user_template).render(**safe).strip() if self.user_template else ""
        return RenderedPrompt(system=system, user=user)


def neutralise(value: Any) -> Any:
    """Replace ``<`` and ``>`` in every string inside ``value`` so it cannot open or close a delimiter."""
    if isinstance(value, str):
        return value.replace("<", "‹").replace(">", "›")
    if isinstance(value, Mapping):
        return {k: neutralise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [neutralise(v) for v in value]
    return value


@dataclass(frozen=True)
class Problem:
    """One validation finding, with its location."""

    path: Path
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


_FRONT = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n?", re.DOTALL)


def parse_prompt_file(path: Path) -> tuple[PromptFile | None, list[Problem]]:
    """Parse and validate one file; return it (or None on errors) and every problem found."""
    problems: list[Problem] = []
    try:
        text = read_user_text(path, "prompt file", MAX_PROMPT_FILE_BYTES)
    except InvalidInputError as exc:
        return None, [Problem(path, 1, str(exc).replace(f"prompt file {path} ", "", 1))]
    match = _FRONT.match(text)
    if not match:
        return None, [Problem(path, 1, "missing YAML front-matter (a '---' block at the top)")]
    header, body = match.group(1), text[match.end() :]
    body_line = text[: match.end()].count("\n") + 1

    def line_of(key: str) -> int:
        for i, line in enumerate(header.splitlines(), start=2):
            if re.match(rf"\s*{re.escape(key)}\s*:", line):
                return i
        return 1

    try:
        raw = load_yaml(header, where="front-matter")
    except InvalidInputError as exc:
        found = re.match(r"front-matter:(\d+):", str(exc))
        line = int(found.group(1)) + 1 if found else 1  # the header starts on the file's line 2
        return None, [Problem(path, line, re.sub(r"^front-matter(:\d+)?: ", "", str(exc)))]
    if not isinstance(raw, dict):
        return None, [Problem(path, 1, "front-matter must be a mapping of keys to values")]
    try:
        meta = FrontMatter.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = ".".join(str(p) for p in err["loc"])
            problems.append(Problem(path, line_of(field), f"{where}: {err['msg']}"))
        return None, problems

    if meta.id != path.stem:
        problems.append(
            Problem(path, line_of("id"), f"id {meta.id!r} must equal the file name {path.stem!r}")
        )
    system_part, sep, user_part = body.partition(f"\n{USER_MARKER}\n")
    if not sep and body.rstrip().endswith(USER_MARKER):
        system_part, user_part, sep = body.rstrip()[: -len(USER_MARKER)], "", USER_MARKER
    system_part, example, example_problems = _split_example(path, meta, system_part, body_line)
    problems.extend(example_problems)
    if not system_part.strip():
        problems.append(Problem(path, body_line, "empty body (the system part has no text)"))
    if meta.kind == "persona" and sep:
        problems.append(Problem(path, body_line, f"personas have no user part; remove {USER_MARKER!r}"))
    if meta.kind == "task" and not user_part.strip():
        problems.append(Problem(path, body_line, f"tasks need a user part after a {USER_MARKER!r} line"))

    user_line = body_line + system_part.count("\n") + 1
    for part, declared, start, label in (
        (system_part, meta.variables, body_line, "variables"),
        (user_part, meta.user_variables, user_line, "user_variables"),
    ):
        problems.extend(_check_part(path, part, declared, start, label, line_of(label)))

    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if any(p.severity == "error" for p in problems):
        return None, problems
    # A trial render with placeholder values: what the sandbox refuses fails here, not at run time.
    placeholders = dict.fromkeys([*meta.variables, *meta.user_variables], "x")
    for part, start in ((system_part, body_line), (user_part, user_line)):
        try:
            _ENV.from_string(part).render(**placeholders)
        except jinja2.exceptions.SecurityError as exc:
            problems.append(Problem(path, start, f"the template does something unsafe: {exc}"))
        except Exception:  # placeholders are strings: a type error here proves nothing about the file
            pass
    if any(p.severity == "error" for p in problems):
        return None, problems
    return PromptFile(meta, system_part.strip("\n"), user_part.strip("\n"), path, sha, example), problems


def _split_example(
    path: Path, meta: FrontMatter, system_part: str, body_line: int
) -> tuple[str, WorkedExample | None, list[Problem]]:
    """Cut the worked example out of the system part and check it against the task's reply schema."""
    problems: list[Problem] = []
    head, has_example, rest = system_part.partition(f"\n{EXAMPLE_MARKER}\n")
    line = body_line + head.count("\n") + 1
    if meta.output is not None and meta.output not in REPLY_SCHEMAS:
        allowed = ", ".join(sorted(REPLY_SCHEMAS))
        problems.append(Problem(path, 1, f"output {meta.output!r} is not a reply schema; allowed: {allowed}"))
    if not has_example:
        if REPLY_MARKER in system_part:
            problems.append(Problem(path, body_line, f"{REPLY_MARKER!r} without an {EXAMPLE_MARKER!r} line"))
        if meta.kind == "task" and meta.output is not None:
            problems.append(
                Problem(path, body_line, f"a task with an output needs a worked example ({EXAMPLE_MARKER})")
            )
        return system_part, None, problems
    if meta.kind == "persona" or meta.output is None:
        problems.append(Problem(path, line, "only tasks with an `output` schema may carry a worked example"))
        return head, None, problems
    ex_user, has_reply, ex_reply = rest.partition(f"\n{REPLY_MARKER}\n")
    if not has_reply or not ex_user.strip() or not ex_reply.strip():
        problems.append(
            Problem(path, line, f"the example needs a user message, then {REPLY_MARKER!r} and a reply")
        )
        return head, None, problems
    for text in (ex_user, ex_reply):
        if "{{" in text or "{%" in text:
            problems.append(Problem(path, line, "the worked example is literal text: no Jinja tags in it"))
            return head, None, problems
    schema = REPLY_SCHEMAS.get(meta.output)
    if schema is not None:
        try:
            schema.model_validate_json(ex_reply.strip())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "reply"
            problems.append(
                Problem(
                    path, line, f"the example reply does not match {meta.output}: {where}: {first['msg']}"
                )
            )
    return head, WorkedExample(ex_user.strip(), ex_reply.strip()), problems


def _check_part(
    path: Path, part: str, declared: Iterable[str], start: int, label: str, decl_line: int
) -> list[Problem]:
    problems: list[Problem] = []
    try:
        used = jinja2.meta.find_undeclared_variables(_ENV.parse(part))
    except jinja2.TemplateSyntaxError as exc:
        return [Problem(path, start + (exc.lineno or 1) - 1, f"Jinja syntax error: {exc.message}")]
    declared_set = set(declared)
    for name in sorted(used - declared_set):
        problems.append(Problem(path, _first_use(part, name, start), f"{name!r} is used but not in {label}"))
    for name in sorted(declared_set - used):
        problems.append(Problem(path, decl_line, f"{name!r} is declared in {label} but unused", "warning"))
    if label == "variables":
        for name in sorted((used | declared_set) & UNTRUSTED_VARIABLES):
            problems.append(
                Problem(
                    path,
                    _first_use(part, name, start),
                    f"{name!r} carries user text and may only appear in the user part (after {USER_MARKER})",
                )
            )
    return problems


def _first_use(part: str, name: str, start: int) -> int:
    for i, line in enumerate(part.splitlines()):
        if re.search(rf"\b{re.escape(name)}\b", line):
            return start + i
    return start


class PromptLibrary:
    """All prompt files of a directory (``personas/*.md`` and ``tasks/*.md``), loaded and validated once."""

    def __init__(self, files: Mapping[str, PromptFile], warnings: list[Problem], root: Path) -> None:
        self._files = dict(files)
        self.warnings = warnings
        self.root = root

    @classmethod
    def load(cls, root: Path, require: Mapping[str, str | None] | None = None) -> PromptLibrary:
        """Load every file under ``root``.

        Args:
            root: the prompts directory.
            require: task id -> reply schema every library must have (default: :data:`REQUIRED_TASKS`).

        Raises:
            PromptValidationError: listing every error of every file at once.
        """
        files, problems = check_prompt_dir(root, require)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            listing = "; ".join(str(p) for p in errors)
            raise PromptValidationError(f"{len(errors)} problem(s) in prompt files: {listing}")
        return cls(files, [p for p in problems if p.severity == "warning"], root)

    def get(self, key: str) -> PromptFile:
        """A file by ``kind/id`` (``tasks/understand``) or bare id.

        Raises:
            KeyError: no such file; the message lists the ids there are.
        """
        ident = key.split("/", 1)[-1]
        if ident not in self._files:
            raise KeyError(f"no prompt file {key!r}; available: {', '.join(sorted(self._files))}")
        return self._files[ident]

    def ids(self, kind: Literal["persona", "task"] | None = None) -> list[str]:
        """Sorted ids, optionally of one kind."""
        return sorted(i for i, f in self._files.items() if kind is None or f.meta.kind == kind)

    def __iter__(self) -> Iterator[PromptFile]:
        return iter(self._files[i] for i in sorted(self._files))

    def __len__(self) -> int:
        return len(self._files)


# A persona or task file is a few KB; a bigger one is a mistake (or an attack on `prompts check`).
MAX_PROMPT_FILE_BYTES = 64_000

# The tasks MC-Agent and the evals' single-LLM baseline call, with the reply schema each one parses: a
# library without one of them fails at the first rewrite that needs it, so `prompts check` refuses it.
REQUIRED_TASKS: dict[str, str | None] = {
    "understand": "content_anchors",
    "persona_reaction": "persona_reply",
    "concept_chain": "concept_reply",
    "consensus": "consensus_reply",
    "repair_anchors": "revised_prompt",
    "revise": "revised_prompt",
    "single_rewrite": "revised_prompt",
    "repair_output": None,
}


def check_prompt_dir(
    root: Path, require: Mapping[str, str | None] | None = None
) -> tuple[dict[str, PromptFile], list[Problem]]:
    """Validate every ``*.md`` under ``root/personas`` and ``root/tasks``; never raises for bad files.

    ``require`` (default :data:`REQUIRED_TASKS`) names the tasks that must exist, each with its ``output``.
    """
    require = REQUIRED_TASKS if require is None else require
    problems: list[Problem] = []
    files: dict[str, PromptFile] = {}
    if not root.is_dir():
        problem = (
            "is a file, not a prompts directory" if root.exists() else "prompts directory does not exist"
        )
        return files, [Problem(root, 0, problem)]
    personas = sorted((root / "personas").glob("*.md"))
    paths = personas + sorted((root / "tasks").glob("*.md"))
    if not paths:
        problems.append(Problem(root, 0, "no prompt files under personas/ or tasks/"))
    elif not personas:
        problems.append(Problem(root / "personas", 0, "no persona file: MC-Agent needs at least one"))
    for path in paths:
        parsed, found = parse_prompt_file(path)
        problems.extend(found)
        if parsed is None:
            continue
        expected_kind = "persona" if path.parent.name == "personas" else "task"
        if parsed.meta.kind != expected_kind:
            problems.append(
                Problem(path, 1, f"kind {parsed.meta.kind!r} but the file is in {path.parent.name}/")
            )
            continue
        if parsed.id in files:
            problems.append(Problem(path, 1, f"duplicate id {parsed.id!r} (also {files[parsed.id].path})"))
            continue
        files[parsed.id] = parsed
    if paths:
        problems.extend(_missing_tasks(root, files, require))
    return files, problems


def _missing_tasks(
    root: Path, files: Mapping[str, PromptFile], require: Mapping[str, str | None]
) -> list[Problem]:
    problems = []
    for task_id, output in require.items():
        path = root / "tasks" / f"{task_id}.md"
        found = files.get(task_id)
        if found is None:
            if not path.is_file():  # a file that exists but is broken already has its own problem
                problems.append(Problem(path, 0, f"missing: MC-Agent needs task {task_id!r}"))
        elif found.meta.output != output:
            problems.append(
                Problem(
                    found.path,
                    1,
                    f"output {found.meta.output!r}, but task {task_id!r} is parsed as {output!r}",
                )
            )
    return problems
