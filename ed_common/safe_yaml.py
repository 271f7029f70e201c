"""YAML for files that users share (suites, prompt front-matter): safe-load only, with size limits.

``yaml.safe_load`` builds no Python objects beyond plain data, but it still accepts a "billion laughs"
file: nine anchors, each a list of nine aliases of the one before, expand to 9^9 values once anything walks
the data (validation, printing, hashing), and memory grows without bound. So a file is refused when its
text is too large, when it uses too many aliases, or when its nodes, counted with every alias expanded,
are too many. The expanded count is computed on the composed node graph (memoised by node), before any
value is constructed, so the check itself costs time linear in the file.
"""

from __future__ import annotations

from typing import Any

import yaml

from ed_common.errors import InvalidInputError

MAX_BYTES = 1_000_000
MAX_ALIASES = 1_000
MAX_NODES = 200_000


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # while counting its children: a node that contains itself is over the limit
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, limit)
            if size > limit:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, limit) + _expanded_size(v, memo, limit)
            if size > limit:
                break
    memo[key] = size
    return size


class _CountingLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs here
    """A SafeLoader that counts alias events while composing."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise InvalidInputError(
                    f"{mark.line + 1}: more than {MAX_ALIASES} YAML aliases; allowed: at most {MAX_ALIASES}"
                )
        return super().compose_node(parent, index)


def load_yaml(text: str, *, where: str) -> Any:
    """Parse ``text`` as YAML plain data within the limits above.

    Args:
        text: The file's text.
        where: How to name the source in errors (a path).

    Raises:
        InvalidInputError: over a limit (naming it), or invalid YAML (with its line).
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        raise InvalidInputError(f"{where}: {size} bytes of YAML; allowed: at most {MAX_BYTES}")
    try:
        loader = _CountingLoader(text)  # the reader refuses control characters here, as a YAMLError
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{where}: invalid YAML: {' '.join(str(exc).split())[:160]}") from None
    try:
        try:
            node = loader.get_single_node()
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}:{exc}") from None
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_NODES) > MAX_NODES:
            raise InvalidInputError(
                f"{where}: more than {MAX_NODES} YAML values once its aliases are expanded; "
                f"allowed: at most {MAX_NODES}"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputError(f"{where}{line}: invalid YAML: {' '.join(problem.split())[:160]}") from None
    except RecursionError:  # PyYAML composes and constructs recursively: ~1,000 nested brackets overflow it
        raise InvalidInputError(
            f"{where}: YAML nested too deeply; allowed: a few levels of lists and maps"
        ) from None
    finally:
        loader.dispose()
