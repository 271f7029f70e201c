"""Dependency rules: ed_agents never imports torch or ed_diffusion; ed_diffusion never imports agents; the
world dataset never imports the world benchmark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ed_common.settings import REPO_ROOT

# Run by a different interpreter (the server venv), never imported by the app.
SERVER_SIDE = {"ed_agents/gguf_convert.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ed_agents_source_never_imports_torch_or_diffusion() -> None:
    for path in sorted((REPO_ROOT / "ed_agents").rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if rel in SERVER_SIDE:
            continue
        bad = _imports(path) & {"torch", "ed_diffusion", "diffusers", "transformers", "graphs", "cli"}
        assert not bad, f"{rel} imports {bad}"


def test_ed_diffusion_and_common_never_import_the_agent_side() -> None:
    for pkg in ("ed_diffusion", "ed_common"):
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            bad = _imports(path) & {
                "ed_agents",
                "langgraph",
                "langchain_core",
                "langchain_openai",
                "graphs",
                "cli",
            }
            assert not bad, f"{path} imports {bad}"


def test_ed_common_never_imports_torch_or_the_image_side() -> None:
    # The render contract lives here so the agent side can type its renderer without torch.
    for path in sorted((REPO_ROOT / "ed_common").rglob("*.py")):
        bad = _imports(path) & {"torch", "diffusers", "transformers", "ed_diffusion", "numpy"}
        assert not bad, f"{path} imports {bad}"


def test_the_world_dataset_never_imports_the_world_benchmark() -> None:
    # The procedural dataset and its oracles stand alone; the benchmark recipe trains and scores on them.
    for path in sorted((REPO_ROOT / "ed_diffusion" / "world").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for n in ast.walk(tree):  # `from ed_diffusion import world_bench` names it too
            if isinstance(n, ast.ImportFrom) and n.module:
                modules |= {n.module, *(f"{n.module}.{a.name}" for a in n.names)}
        bad = {m for m in modules if m.split(".")[:2] == ["ed_diffusion", "world_bench"]}
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}"


def test_agent_side_loads_without_torch_at_runtime() -> None:
    code = (
        "import sys, cli, ed_agents.llm_endpoint, graphs.emotion_director, graphs.session, graphs.runner;"
        "import graphs.tool_node, graphs.state, graphs.renderer;"
        # The image side's command groups (typer + ed_common only) are registered by `cli`; nothing else
        # of ed_diffusion, and nothing that imports torch, may load until a command needs it.
        "cli_ok = {'ed_diffusion', *(f'ed_diffusion.cli_{g}' for g in ('bank', 'train', 'world'))};"
        "bad = [m for m in sys.modules if m in ('torch', 'diffusers', 'transformers')"
        " or (m.startswith('ed_diffusion') and m not in cli_ok)];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Our packages; an import anywhere in a module (at the top or inside a function) is an edge.
PACKAGES = ("ed_agents", "ed_common", "ed_diffusion", "graphs", "evals")


def _module_graph() -> dict[str, set[str]]:
    files = {"cli": REPO_ROOT / "cli.py"}
    for pkg in PACKAGES:
        for path in (REPO_ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path

    def owner(name: str) -> str | None:  # "ed_diffusion.bank.VisualPromptBank" -> "ed_diffusion.bank"
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {t for t in map(owner, targets) if t and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_through_imports_inside_functions() -> None:
    assert _cycles(_module_graph()) == []


def test_the_cycle_check_finds_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
