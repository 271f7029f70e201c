"""Sample files: shard detection, durable appends, torn lines, merging, the fresh-directory rule, the lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from evals.records import SampleRecord
from evals.shards import (
    SampleWriter,
    Shard,
    best_records,
    check_fresh_out_dir,
    detect_shard,
    merge_lock,
    merge_samples,
    rank_device,
    read_records,
    repair_tail,
)


def _rec(sid: str, status: str = "ok", finished: str = "2026-01-01T00:00:00") -> SampleRecord:
    return SampleRecord(
        id=sid,
        system="plain_vp",
        kind="plain",
        visual_prompts=True,
        prompt="a dog",
        emotion=Emotion.FEAR,
        seed=0,
        status=status,  # type: ignore[arg-type]
        error=None if status == "ok" else "boom",
        finished=finished,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, Shard(0, 1)), ({"RANK": "1", "WORLD_SIZE": "3"}, Shard(1, 3)), ({"WORLD_SIZE": "2"}, Shard(0, 2))],
)
def test_detect_shard_reads_rank_and_world_size(env: dict[str, str], expected: Shard) -> None:
    assert detect_shard(env) == expected


@pytest.mark.parametrize("env", [{"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}])
def test_detect_shard_rejects_impossible_values_in_one_line(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="allowed integers with 0 <= RANK < WORLD_SIZE"):
        detect_shard(env)


def test_each_local_rank_gets_its_own_gpu_unless_a_device_was_set() -> None:
    assert rank_device(None, "1", cuda_available=True) == "cuda:1"
    assert rank_device("cuda", "0", cuda_available=True) == "cuda:0"
    assert rank_device("cuda:3", "1", cuda_available=True) == "cuda:3"  # explicit wins
    assert rank_device(None, "1", cuda_available=False) is None  # CPU processes
    assert rank_device(None, None, cuda_available=True) is None
    with pytest.raises(InvalidInputError, match="LOCAL_RANK='x1'; allowed: an integer >= 0"):
        rank_device(None, "x1", cuda_available=True)


def test_shards_partition_the_plan_positions() -> None:
    shards = [Shard(r, 3) for r in range(3)]
    owners = [[s.rank for s in shards if s.owns(p)] for p in range(10)]
    assert all(len(o) == 1 for o in owners)
    assert Shard().samples_file == "samples.jsonl" and shards[2].samples_file == "samples.rank2.jsonl"


def test_writer_cuts_a_torn_last_line_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    whole = _rec("a").to_line()
    path.write_text(whole + "\n" + _rec("b").to_line()[:40])  # killed while writing b
    assert [r.id for r in read_records(path)] == ["a"]  # the torn line is skipped when reading
    with SampleWriter(path) as writer:
        writer.write(_rec("c"))
    assert [r.id for r in read_records(path)] == ["a", "c"]
    assert path.read_text().count("\n") == 2


def test_best_records_prefer_ok_then_the_latest(tmp_path: Path) -> None:
    first, second = tmp_path / "samples.rank0.jsonl", tmp_path / "samples.rank1.jsonl"
    first.write_text(
        _rec("a", "error", "2026-01-02").to_line() + "\n" + _rec("b", "ok", "2026-01-01").to_line() + "\n"
    )
    second.write_text(
        _rec("a", "ok", "2026-01-01").to_line() + "\n" + _rec("b", "ok", "2026-01-03").to_line() + "\n"
    )
    best = best_records([first, second])
    assert best["a"].ok and best["b"].finished == "2026-01-03"


def test_merge_writes_the_union_in_plan_order_and_keeps_the_shards(tmp_path: Path) -> None:
    (tmp_path / "samples.rank0.jsonl").write_text(_rec("c").to_line() + "\n" + _rec("a").to_line() + "\n")
    (tmp_path / "samples.rank1.jsonl").write_text(_rec("b").to_line() + "\n" + _rec("zz").to_line() + "\n")
    records = merge_samples(tmp_path, ["a", "b", "c"])
    assert [r.id for r in records] == ["a", "b", "c"]  # "zz" is not planned
    assert [r.id for r in read_records(tmp_path / "samples.jsonl")] == ["a", "b", "c"]
    assert (tmp_path / "samples.rank0.jsonl").is_file()


def test_a_used_directory_is_refused_without_resume(tmp_path: Path) -> None:
    check_fresh_out_dir(tmp_path / "new", Shard())
    check_fresh_out_dir(tmp_path, Shard())  # empty is fine
    (tmp_path / "samples.jsonl").write_text("")
    with pytest.raises(InvalidInputError, match=r"is not empty \(samples.jsonl\); pass --resume"):
        check_fresh_out_dir(tmp_path, Shard())


def test_ranks_tolerate_what_their_siblings_just_created(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "samples.rank1.jsonl").write_text("")
    check_fresh_out_dir(tmp_path, Shard(0, 2))
    with pytest.raises(InvalidInputError, match=r"samples\.rank1\.jsonl"):
        check_fresh_out_dir(tmp_path, Shard(1, 2))  # its own file: an earlier run
    with pytest.raises(InvalidInputError, match=r"manifest\.json"):
        check_fresh_out_dir(tmp_path, Shard())


def test_merge_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with merge_lock(tmp_path) as first, merge_lock(tmp_path) as second:
        assert first and not second
    with merge_lock(tmp_path) as again:
        assert again


def test_no_merge_while_a_sample_file_is_being_appended_to(tmp_path: Path) -> None:
    # A merge renames a new samples.jsonl over the old one: an open appender would keep writing to the old
    # (unlinked) file and its lines would be lost. So a merge waits until no writer is open.
    with SampleWriter(tmp_path / "samples.jsonl") as writer:
        writer.write(_rec("a"))
        with merge_lock(tmp_path) as acquired:
            assert not acquired
    with merge_lock(tmp_path) as acquired:
        assert acquired
    with SampleWriter(tmp_path / "samples.rank0.jsonl"), SampleWriter(tmp_path / "samples.rank1.jsonl"):
        pass  # writers share the lock with each other


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b'{"a": 1}\n{"b": 22}\n{"c', b'{"a": 1}\n{"b": 22}\n'),  # torn last line cut
        (b'{"a": 1}\n' + b"x" * 11, b'{"a": 1}\n'),  # torn line longer than the read block
        (b"no newline at all", b""),
        (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1}\n{"b": 2}\n'),  # whole lines: untouched
        (b"", b""),
    ],
)
def test_repair_tail_cuts_only_a_torn_last_line(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    repair_tail(path, block=4)  # small blocks: the backward scan crosses several of them
    assert path.read_bytes() == kept
