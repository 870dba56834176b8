"""Durable checkpoints on real files (and fsspec's in-memory filesystem): atomicity, fallback, async writes."""

import json
import logging

import fsspec
import pytest
import torch

from elastrain.elastic.checkpoints import CheckpointStore


def _state(value: float, step: int = 0) -> dict:
    return {"model": {"w": torch.full((4, 3), value), "b": torch.arange(3.0)}, "step": step, "name": "run",
            "history": [1.5, 2]}


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_then_latest_returns_an_equal_state(tmp_path):
    with CheckpointStore(str(tmp_path / "ck")) as store:
        info = store.save(7, _state(2.0, step=7), meta={"workers": 2})
        loaded = store.latest()
    assert loaded is not None and loaded.skipped == []
    assert torch.equal(loaded.state["model"]["w"], torch.full((4, 3), 2.0))
    assert torch.equal(loaded.state["model"]["b"], torch.arange(3.0))
    assert loaded.state["step"] == 7 and loaded.state["name"] == "run" and loaded.state["history"] == [1.5, 2]
    assert loaded.info.step == info.step == 7 and loaded.info.sha256 == info.sha256
    assert loaded.info.meta == {"workers": 2} and info.path == str(tmp_path / "ck" / "ckpt-000000007.pt")
    manifest = json.loads((tmp_path / "ck" / "ckpt-000000007.json").read_text())
    assert manifest["bytes"] == info.bytes == (tmp_path / "ck" / "ckpt-000000007.pt").stat().st_size
    assert manifest["created"] > 0 and manifest["file"] == "ckpt-000000007.pt"


def test_keeps_the_newest_checkpoints_and_removes_crashed_leftovers(tmp_path):
    folder = tmp_path / "ck"
    with CheckpointStore(str(folder), keep=2) as store:
        store.save(1, _state(1.0))
        (folder / "ckpt-000000002.pt.0123abcd.tmp").write_bytes(b"half a write")
        (folder / "ckpt-000000003.pt").write_bytes(b"data renamed, manifest never written")
        for step in (2, 4, 6):
            store.save(step, _state(float(step)))
        assert [info.step for info in store.list()] == [4, 6]
    assert _names(folder) == ["ckpt-000000004.json", "ckpt-000000004.pt", "ckpt-000000006.json", "ckpt-000000006.pt"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    folder = tmp_path / "ck"
    with CheckpointStore(str(folder)) as store:
        store.save(20, _state(1.0))
        store.save(40, _state(2.0))
        newest = folder / "ckpt-000000040.pt"
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
        with caplog.at_level(logging.WARNING, logger="elastrain.checkpoints"):
            loaded = store.latest()
        assert [info.step for info in store.list()] == [20]   # list() notices the size without reading
    assert loaded is not None and loaded.info.step == 20
    assert torch.equal(loaded.state["model"]["w"], torch.full((4, 3), 1.0))
    assert len(loaded.skipped) == 1 and "ckpt-000000040.pt is corrupt" in loaded.skipped[0]
    assert "using the previous one" in loaded.skipped[0]
    assert caplog.messages == loaded.skipped


def test_same_size_corruption_is_caught_by_the_checksum(tmp_path):
    folder = tmp_path / "ck"
    with CheckpointStore(str(folder)) as store:
        store.save(20, _state(1.0))
        store.save(40, _state(2.0))
        newest = folder / "ckpt-000000040.pt"
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
        loaded = store.latest()
    assert loaded is not None and loaded.info.step == 20
    assert loaded.skipped == ["checkpoint ckpt-000000040.pt is corrupt (sha256 mismatch); using the previous one"]


def test_a_missing_manifest_is_reported_as_incomplete(tmp_path):
    folder = tmp_path / "ck"
    with CheckpointStore(str(folder)) as store:
        store.save(20, _state(1.0))
        store.save(40, _state(2.0))
        (folder / "ckpt-000000040.json").unlink()
        loaded = store.latest()
    assert loaded is not None and loaded.info.step == 20
    assert len(loaded.skipped) == 1 and "ckpt-000000040.pt is incomplete" in loaded.skipped[0]


def test_when_every_checkpoint_is_broken_latest_is_none_and_says_why(tmp_path):
    folder = tmp_path / "ck"
    with CheckpointStore(str(folder)) as store:
        assert store.latest() is None and store.last_skipped == []   # an empty store is not an error
        store.save(20, _state(1.0))
        store.save(40, _state(2.0))
        (folder / "ckpt-000000020.json").write_text("{not json")
        (folder / "ckpt-000000040.pt").write_bytes(b"")
        assert store.latest() is None
    assert len(store.last_skipped) == 2
    assert "ckpt-000000040.pt is corrupt" in store.last_skipped[0]
    assert "ckpt-000000020.pt is incomplete (unreadable manifest)" in store.last_skipped[1]


def test_save_async_writes_the_state_as_it_was_at_call_time(tmp_path):
    state = _state(1.0, step=5)
    with CheckpointStore(str(tmp_path / "ck")) as store:
        store.save_async(5, state, meta={"generation": 3})
        state["model"]["w"].add_(100.0)   # training goes on and changes the tensors in place
        state["step"] = 6
        store.save_async(6, state)   # waits for the first write, then writes in the background
        store.wait()
        infos = store.drain_completed()
        assert store.drain_completed() == []
        first = store.latest()
    assert [info.step for info in infos] == [5, 6]
    assert all(info.write_s > 0 and info.snapshot_s > 0 and info.bytes > 0 for info in infos)
    assert infos[0].meta == {"generation": 3}
    assert first is not None and first.info.step == 6
    assert torch.equal(first.state["model"]["w"], torch.full((4, 3), 101.0))
    with CheckpointStore(str(tmp_path / "ck")) as store:
        store.save(9, {"w": torch.zeros(1)})
        assert [info.step for info in store.drain_completed()] == [9]   # synchronous saves are reported too
    older = torch.load(tmp_path / "ck" / "ckpt-000000005.pt", weights_only=True)
    assert torch.equal(older["model"]["w"], torch.full((4, 3), 1.0)) and older["step"] == 5


def test_works_through_a_file_url(tmp_path):
    with CheckpointStore(f"file://{tmp_path}/ck", keep=1) as store:
        store.save(1, _state(1.0))
        store.save_async(2, _state(2.0))
        store.wait()
        loaded = store.latest()
    assert loaded is not None and loaded.info.step == 2
    assert _names(tmp_path / "ck") == ["ckpt-000000002.json", "ckpt-000000002.pt"]


def test_works_on_fsspecs_in_memory_filesystem():
    memory = fsspec.filesystem("memory")
    try:
        with CheckpointStore("memory://ck-test", keep=2) as store:
            for step in (1, 2, 3):
                store.save_async(step, _state(float(step)))
            store.wait()
            loaded = store.latest()
            assert loaded is not None and loaded.info.step == 3
            assert torch.equal(loaded.state["model"]["w"], torch.full((4, 3), 3.0))
            assert loaded.info.path.startswith("memory://") and loaded.info.path.endswith("ckpt-000000003.pt")
            assert [info.step for info in store.list()] == [2, 3]
            memory.pipe_file("/ck-test/ckpt-000000003.pt", b"overwritten")
            assert store.latest().info.step == 2
    finally:
        memory.rm("/ck-test", recursive=True)


def test_a_background_write_error_is_reported_not_raised(tmp_path):
    """A failed background write (here: the folder became a file) does not stop the training
    loop: it is reported once by drain_completed, with the path and the bytes it needed."""
    folder = tmp_path / "parent" / "ck"
    store = CheckpointStore(str(folder))
    (tmp_path / "parent" / "ck").rmdir()
    (tmp_path / "parent").rmdir()
    (tmp_path / "parent").write_text("now a regular file, so nothing can be written under it")
    store.save_async(1, _state(1.0))
    store.wait()
    [failed] = store.drain_completed()
    assert failed.step == 1 and str(folder / "ckpt-000000001.pt") in failed.error
    assert f"needs {failed.bytes} bytes" in failed.error
    assert store.drain_completed() == []   # reported once
    store.close()


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(str(tmp_path / "ck"), keep=0)
