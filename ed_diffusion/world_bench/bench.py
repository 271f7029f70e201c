"""`emodir world bench`: the paper's ablation on the affective world, measured by the exact oracles.

Once per benchmark: pretrain the text-only base model from scratch on the shortcut-biased train split (the
one model every seed starts from; its weights do not vary with the seed). Per seed: build the visual-prompt
bank, train the adapter with SFT, then (both from the SFT adapter) image-pair DPO and image-pair DPO + the
negative-visual-prompt term, so seeds vary the adapter stages and the sampling noise. Each system draws the
(content, emotion) pairs from identical noise; the oracles read emotion and content from the pixels. Seeds
run in worker processes; a finished base model or seed is never redone.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ed_common.atomic import write_json_atomic
from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.git_state import git_dirty, git_sha
from ed_common.text import short_repr
from ed_diffusion.world.dataset import WorldPaths, make_world
from ed_diffusion.world_bench.layout import BASE_DIR, BENCH_VERSION, SYSTEM_LABELS, SYSTEMS
from ed_diffusion.world_bench.metrics import aggregate, intervals, metrics_by_split
from ed_diffusion.world_bench.systems import train_systems

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, str], None]  # (steps advanced, description)
RUN_ONLY_FIELDS = ("workers",)  # may change between a run and its resume
CONFIG_FILE = "config.json"  # the first file a benchmark writes: it marks a directory as one
# A seed becomes generator seeds like (seed * 1_000_003 + stage) * 1_000_033 + step (train.py) and
# torch takes at most 2**64 - 1, so past about 1.8e7 a seed would fail mid-run; the bound is round below it.
MAX_BENCH_SEED = 9_999_999
_BENCH_KEYS = frozenset({"seeds", "world_seed", "base_steps", "sft_steps", "dpo_steps"})  # any bench config


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and schedules of one benchmark (``full()`` and ``quick()`` are the shipped ones)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    world_seed: int = 0
    n_train: int = 4000
    n_test: int = 256
    shortcut: float = 0.9
    base_steps: int = 3600
    sft_steps: int = 200
    dpo_steps: int = 100
    batch: int = 32
    base_lr: float = 2e-3
    adapter_lr: float = 1e-3  # SFT
    dpo_lr: float = 3e-4  # both DPO stages: 1e-3 traded most of the content for emotion on a trial seed
    beta: float = 5000.0  # 500 let DPO break images to meet its objective (issue #13's prototype)
    check_every: int = 25  # early stopping: the held-out check every this many adapter steps (0 = off)
    clusters: int = 4
    samples_per_pair: int = 4
    sample_steps: int = 15
    guidance: float = 5.0
    workers: int = 3

    def __post_init__(self) -> None:
        """Validate (one-line errors naming the field and what is allowed)."""
        if problem := seeds_problem(self.seeds):
            raise InvalidInputError(f"seeds={short_repr(self.seeds)}: {problem}")
        if not _is_seed(self.world_seed):
            raise InvalidInputError(
                f"world_seed={self.world_seed!r}; allowed: an integer 0..{MAX_BENCH_SEED}"
            )
        for name in (
            "n_train",
            "n_test",
            "base_steps",
            "sft_steps",
            "dpo_steps",
            "batch",
            "clusters",
            "samples_per_pair",
            "sample_steps",
            "workers",
        ):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name}={getattr(self, name)}; allowed: an integer >= 1")
        if int(self.check_every) < 0:
            raise InvalidInputError(f"check_every={self.check_every}; allowed: an integer >= 0 (0 = off)")
        if not 0.0 <= self.shortcut <= 1.0:
            raise InvalidInputError(f"shortcut={self.shortcut}; allowed: a number in [0, 1]")

    @classmethod
    def full(cls, **overrides: Any) -> BenchConfig:
        """The reported benchmark (its wall time on 2 cores: ``docs/world-bench.md``)."""
        return replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A smoke run of the whole path for CI (a few minutes); its numbers mean little."""
        small = cls(
            n_train=800,
            n_test=64,
            base_steps=120,
            sft_steps=30,
            dpo_steps=15,
            samples_per_pair=1,
            check_every=10,
            sample_steps=8,
        )
        return replace(small, **overrides)

    def steps_per_seed(self) -> int:
        """Progress units of one seed (training steps plus one unit per system evaluated)."""
        return self.sft_steps + 2 * self.dpo_steps + len(SYSTEMS)


def _is_seed(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BENCH_SEED


def seeds_problem(seeds: tuple[int, ...]) -> str | None:
    """What is wrong with a benchmark's seeds (None: nothing), as the second half of a one-line error."""
    allowed = f"allowed: distinct integers 0..{MAX_BENCH_SEED}, at least one"
    if not seeds:
        return f"no seed; {allowed}"
    if bad := [s for s in seeds if not _is_seed(s)]:
        is_int = isinstance(bad[0], int) and not isinstance(bad[0], bool)
        return f"{short_repr(bad[0])} is {'out of range' if is_int else 'not an integer'}; {allowed}"
    # Counter, not seeds.count: a hostile list of a million seeds must be refused fast.
    if dups := sorted(s for s, n in Counter(seeds).items() if n > 1):
        return f"{short_repr(dups)[1:-1]} given more than once; {allowed}"
    return None


def check_bench_dir(out: Path, *, flag: str = "--out") -> None:
    """Refuse ``out`` unless it is new, empty, or a benchmark's directory (writes nothing).

    A benchmark writes ``config.json`` before anything else, so a non-empty directory without a benchmark
    config is someone else's (an eval run, a checkout): filling it would mix our files into theirs.

    Raises:
        InvalidInputError: ``out`` is a file, or a non-empty directory that is not a benchmark's, or its
            ``config.json`` is unreadable.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise InvalidInputError(
            f"{flag} {out} is a file; allowed: a new or empty directory, or a benchmark's"
        )
    if not any(out.iterdir()):
        return
    path = out / CONFIG_FILE
    if not path.is_file():
        raise InvalidInputError(
            f"{flag} {out} holds files but no benchmark ({CONFIG_FILE} is missing); allowed: a new or empty "
            "directory, or a benchmark directory to resume"
        )
    have = _read_config(path, flag)
    if not have.keys() >= _BENCH_KEYS:
        raise InvalidInputError(
            f"{flag} {out}: {path} is not a world-benchmark config (no {', '.join(sorted(_BENCH_KEYS))}); "
            "allowed: a new or empty directory, or a benchmark directory to resume"
        )


def _read_config(path: Path, flag: str) -> dict[str, Any]:
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(
            f"{flag} {path.parent}: {path} is unreadable ({type(exc).__name__}); allowed: a new or empty "
            "directory, or a benchmark directory to resume"
        ) from None
    if not isinstance(have, dict):
        raise InvalidInputError(
            f"{flag} {path.parent}: {path} is not a JSON object; allowed: a new or empty directory, or a "
            "benchmark directory to resume"
        )
    return have


# ------------------------------------------------------------------------------------------ orchestration
def run_bench(out: Path, cfg: BenchConfig, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out``; write ``results.json``, ``results.md``, ``samples.png``.

    Raises:
        InvalidInputError: ``out`` holds a benchmark with a different configuration, or is not a benchmark's
            directory (``check_bench_dir``); nothing is written then.
    """
    from ed_diffusion.world_bench.report import write_reports

    out = Path(out)
    started = time.perf_counter()
    world, base_dir = prepare_bench(out, cfg, progress=progress)
    todo = seeds_to_run(out, cfg)
    if todo:
        _run_seeds(out, world, base_dir, cfg, todo, progress)
    seeds = [json.loads((out / f"seed{s}" / "result.json").read_text()) for s in cfg.seeds]
    reference = _reference_rows(out, world, base_dir)
    results = {
        "format": "emodir-world-bench",
        "format_version": 1,
        "config": asdict(cfg),
        "bench_version": BENCH_VERSION,
        "provenance": _provenance(),
        "systems": {s: SYSTEM_LABELS[s] for s in SYSTEMS},
        "summary": aggregate(seeds),
        "intervals": intervals(seeds),
        "reference": reference,
        "seeds": seeds,
        "wall_s_this_call": round(time.perf_counter() - started, 1),
    }
    write_reports(out, results)
    return results


def prepare_bench(
    out: Path, cfg: BenchConfig, *, progress: ProgressFn | None = None
) -> tuple[WorldPaths, Path]:
    """Create or reopen ``out``: the world and the shared base model (each made once, reused on resume)."""
    check_bench_dir(out)  # before the mkdir: a refused directory gets nothing of ours
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg)
    world = _ensure_world(out / "world", cfg)
    return world, _ensure_base(out / BASE_DIR, world, cfg, progress)


def seeds_to_run(out: Path, cfg: BenchConfig) -> list[int]:
    """The seeds of ``cfg`` that ``out`` holds no finished result of (all of them in a new directory)."""
    return [s for s in cfg.seeds if not (out / f"seed{s}" / "result.json").is_file()]


def steps_to_run(out: Path, cfg: BenchConfig) -> int:
    """Progress units a run of ``cfg`` into ``out`` has left: the base model unless trained, each seed."""
    base = 0 if _base_trained(out / BASE_DIR) else cfg.base_steps
    return base + cfg.steps_per_seed() * len(seeds_to_run(out, cfg))


def install_as_world_preset(out: Path, results: dict[str, Any], target: Path) -> bool:
    """Install the first seed of the finished benchmark in ``out`` as the ``world`` preset at ``target``.

    A current preset already at ``target`` is kept. Returns whether one was installed.
    """
    from ed_diffusion.presets.world import install_world_preset, world_preset_ready

    if world_preset_ready(target):
        return False
    install_world_preset(out, target, seed=results["seeds"][0]["seed"], replace=True)
    return True


def schedule_of(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a benchmark's results: its config without run-only fields, plus the code version."""
    kept = {k: v for k, v in config.items() if k not in RUN_ONLY_FIELDS}
    return kept | {"bench_version": config.get("bench_version", BENCH_VERSION)}


def _check_config(out: Path, cfg: BenchConfig) -> None:
    path = out / CONFIG_FILE
    want = asdict(cfg) | {"bench_version": BENCH_VERSION}
    if path.is_file():
        have = _read_config(path, "--out")
        have.setdefault("bench_version", 1)
        if json.dumps(schedule_of(have), sort_keys=True) != json.dumps(schedule_of(want), sort_keys=True):
            raise InvalidInputError(
                f"{out} holds a benchmark with another configuration or code version ({path}); allowed: the "
                "same options to resume it, or a new --out directory"
            )
        return
    write_json_atomic(path, want, default=None)


def _ensure_world(root: Path, cfg: BenchConfig) -> WorldPaths:
    paths = WorldPaths.at(root)
    if paths.meta_json.is_file():
        return paths
    return make_world(
        root,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        seed=cfg.world_seed,
        shortcut=cfg.shortcut,
        overwrite=True,
    )


def _base_trained(target: Path) -> bool:
    return (target / "model_index.json").is_file()


def _ensure_base(target: Path, world: WorldPaths, cfg: BenchConfig, progress: ProgressFn | None) -> Path:
    """The text-only base pipeline (codec, text encoder, UNet), trained once with the world's seed."""
    if _base_trained(target):
        return target
    import torch

    from ed_diffusion.world.splits import load_split
    from ed_diffusion.world_bench.model import (
        WorldModelConfig,
        assemble_pipeline,
        build_world_tokenizer,
        save_pretrained_atomic,
    )
    from ed_diffusion.world_bench.train import encode_latents, fit_codec, pretrain_base

    data = load_split(world, "train")
    mcfg = WorldModelConfig()
    codec = fit_codec(data.pixels, mcfg)
    data.latents = encode_latents(codec, data.pixels)

    def step(n: int) -> None:
        if progress is not None:
            progress(n, "base model (shared by every seed)")

    # Nothing else runs while the base trains: it may use every core (the seeds then take one each).
    threads = torch.get_num_threads()
    torch.set_num_threads(_cores())
    try:
        unet, text_encoder = pretrain_base(
            data,
            mcfg,
            build_world_tokenizer(mcfg.text_tokens),
            steps=cfg.base_steps,
            seed=cfg.world_seed,
            batch=cfg.batch,
            lr=cfg.base_lr,
            on_step=step,
        )
    finally:
        torch.set_num_threads(threads)
    return save_pretrained_atomic(assemble_pipeline(codec, text_encoder, unet), target)


def _run_seeds(
    out: Path,
    world: WorldPaths,
    base_dir: Path,
    cfg: BenchConfig,
    todo: list[int],
    progress: ProgressFn | None,
) -> None:
    # More single-threaded workers than cores is deliberate: three seeds on two cores finish in ~1.5
    # seed-times, where two workers would need two rounds with one core idle in the second.
    workers = max(1, min(cfg.workers, len(todo)))
    if workers == 1:
        for s in todo:
            run_seed(s, cfg, world.root, base_dir, out, _Relay(progress))
        return
    ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(workers,)
        ) as pool:
            futures = [
                pool.submit(run_seed, s, cfg, world.root, base_dir, out, _Relay(None, queue)) for s in todo
            ]
            while not all(f.done() for f in futures):
                _drain(queue, progress, timeout=0.5)
            _drain(queue, progress, timeout=0.0)
            for f in futures:
                f.result()  # re-raise a worker's error here


def _init_worker(workers: int) -> None:
    import torch

    torch.set_num_threads(max(1, _cores() // workers))


def _drain(queue: Any, progress: ProgressFn | None, timeout: float) -> None:
    import queue as q

    try:
        item = queue.get(timeout=timeout) if timeout > 0 else queue.get_nowait()
        while True:
            if progress is not None:
                progress(*item)
            item = queue.get_nowait()
    except q.Empty:
        return


class _Relay:
    """Progress from a worker: straight to the callback in-process, through a queue across processes."""

    def __init__(self, progress: ProgressFn | None, queue: Any = None) -> None:
        self.progress, self.queue = progress, queue

    def __call__(self, n: int, what: str) -> None:
        if self.queue is not None:
            self.queue.put((n, what))
        elif self.progress is not None:
            self.progress(n, what)


# ------------------------------------------------------------------------------------------- one seed
def run_seed(
    seed: int, cfg: BenchConfig, world_root: Path, base_dir: Path, out: Path, relay: Any
) -> dict[str, Any]:
    """Train the four systems of one seed, evaluate them, write ``seed<N>/result.json`` (atomically)."""
    seed_dir = out / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    result = train_systems(seed, cfg, WorldPaths.at(world_root), base_dir, seed_dir, relay)
    write_json_atomic(seed_dir / "result.json", result, default=None)
    return result


def _reference_rows(out: Path, world: WorldPaths, base_dir: Path) -> dict[str, Any]:
    """Oracle metrics of the real test images and of their codec round trip (lossless, so the same)."""
    path = out / "reference.json"
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    from ed_diffusion.world.splits import load_split
    from ed_diffusion.world_bench.codec import PixelShuffleAutoencoder
    from ed_diffusion.world_bench.train import decode_latents, encode_latents

    test = load_split(world, "test")
    pairs = [
        (c, Emotion.from_index(int(e)), "unusual", 0)
        for c, e in zip(test.contents, test.emotions, strict=True)
    ]
    vae = PixelShuffleAutoencoder.from_pretrained(base_dir / "vae")
    recon = decode_latents(vae, encode_latents(vae, test.pixels))
    ref = {
        "real_test_images": metrics_by_split(test.pixels, pairs)["unusual"],
        "autoencoder_reconstructions": metrics_by_split(recon, pairs)["unusual"],
    }
    write_json_atomic(path, ref, default=None)
    return ref


def _provenance() -> dict[str, Any]:
    """Code and library versions behind the numbers (the manifest of a benchmark run)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),  # True: the numbers come from uncommitted code
        "python": platform.python_version(),
        "packages": {n: ver(n) for n in ("emotion-director", "torch", "diffusers", "transformers", "numpy")},
        "cpu_count": _cores(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _cores() -> int:
    """Cores this process may use (affinity and cgroup cpusets, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
