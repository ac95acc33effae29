"""VerifiedCheckpointIO: atomic writes in the checkpoint's own folder, and one clear error for every damaged file."""

import os
import random
import struct
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vzero.checkpoint import (
    DIGEST_KEY,
    SHARDED_INDEX,
    SHARDED_METADATA,
    TMP_SUFFIX,
    CheckpointError,
    VerifiedCheckpointIO,
    check_finite,
    check_trainable,
    load_sharded_metadata,
    rng_state,
    set_rng_state,
    state_digest,
    trainable_state,
    trained_weights,
)


def checkpoint() -> dict:
    gen = torch.Generator().manual_seed(0)
    weights = {"net.lora_A": torch.randn(64, 16, generator=gen), "net.lora_B": torch.randn(16, 64, generator=gen)}
    return {"state_dict": weights, "global_step": 3, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(4)}}}]}


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "run" / "last.ckpt"
    VerifiedCheckpointIO().save_checkpoint(checkpoint(), path)
    return path


def member_offset(path: Path, name: str) -> tuple[int, int]:
    """Where the bytes of a zip member start in the file, and how many there are."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(name))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_a_saved_checkpoint_loads_back_whole_with_its_digest_checked(saved):
    loaded = VerifiedCheckpointIO().load_checkpoint(saved)
    for key, value in checkpoint()["state_dict"].items():
        assert torch.equal(loaded["state_dict"][key], value)
    assert loaded["global_step"] == 3 and DIGEST_KEY not in loaded
    raw = torch.load(saved, weights_only=True)
    assert raw[DIGEST_KEY] == state_digest(checkpoint()["state_dict"])


def test_the_write_goes_to_a_temporary_in_the_same_folder_then_replaces(tmp_path, monkeypatch):
    replaced = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real(src, dst)))
    path = tmp_path / "run" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(b"old")
    VerifiedCheckpointIO().save_checkpoint(checkpoint(), path)
    ((src, dst),) = replaced
    assert dst == path and src.parent == path.parent and src.name.startswith(".last.ckpt.") and src.suffix == TMP_SUFFIX
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # what a plain write gives, not mkstemp's 0600


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    VerifiedCheckpointIO().save_checkpoint(checkpoint(), path)
    before = path.read_bytes()

    def dies_midway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        VerifiedCheckpointIO().save_checkpoint(checkpoint(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_temporaries_of_killed_writes_are_removed_at_the_next_save(tmp_path):
    stale = [tmp_path / f".last.ckpt.dead{i}{TMP_SUFFIX}" for i in range(2)]
    for s in stale:
        s.write_bytes(b"\0" * 1024)
    (tmp_path / "notes.txt").write_text("kept")
    VerifiedCheckpointIO().save_checkpoint(checkpoint(), tmp_path / "step=1.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step=1.ckpt"]


def printed(error: BaseException) -> str:
    """What the user sees: the whole traceback, chained exceptions included."""
    return "".join(traceback.format_exception(error))


def damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "zero-byte":
        raw = bytearray()
    elif how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "garbage":
        raw = bytearray(random.Random(0).randbytes(len(raw)))
    elif how == "bit-flipped tensor":
        start, size = member_offset(path, "data/0")
        for i in range(start + size // 2, start + size // 2 + 64):  # 64 bytes inside the first tensor's data
            raw[i] ^= 0xFF
    elif how == "bit-flipped header":
        raw[30] ^= 0x01  # the first member's name in its local header
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("zero-byte", "empty"),
        ("truncated", "not a readable torch checkpoint"),
        ("garbage", "not a readable torch checkpoint"),
        ("bit-flipped tensor", "corrupt: member '.*data/0' fails its CRC-32"),
        ("bit-flipped header", "corrupt: member '.*data.pkl' fails its CRC-32 or header check"),
    ],
)
def test_a_damaged_checkpoint_is_one_clear_error_naming_the_file(saved, how, says):
    torch.load(saved, weights_only=True)  # whole, it loads
    damage(saved, how)
    with pytest.raises(CheckpointError, match=says) as e:
        VerifiedCheckpointIO().load_checkpoint(saved)
    assert str(saved) in str(e.value)
    assert "weights_only" not in printed(e.value)


def test_a_bit_flip_that_torch_loads_silently_is_caught(saved):
    damage(saved, "bit-flipped tensor")
    assert not torch.equal(
        torch.load(saved, weights_only=True)["state_dict"]["net.lora_A"], checkpoint()["state_dict"]["net.lora_A"]
    )


def test_weights_that_differ_from_their_stored_digest_are_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    tampered = checkpoint()
    tampered[DIGEST_KEY] = state_digest(tampered["state_dict"])
    tampered["state_dict"]["net.lora_B"][0, 0] += 1  # archive CRCs are right: the change happened before the write
    torch.save(tampered, path)
    with pytest.raises(CheckpointError, match=f"{path}.*SHA-256"):
        VerifiedCheckpointIO().load_checkpoint(path)


def test_a_checkpoint_without_a_digest_is_checked_by_its_crcs_alone(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save(checkpoint(), path)  # as plain Lightning writes them
    assert VerifiedCheckpointIO().load_checkpoint(path)["global_step"] == 3


def test_a_checkpoint_the_safe_loader_refuses_is_named_without_the_unsafe_advice(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "callback": zipfile.ZipInfo("x")}, path)  # an arbitrary class: not weights_only
    with pytest.raises(CheckpointError, match=f"{path} could not be loaded: UnpicklingError") as e:
        VerifiedCheckpointIO().load_checkpoint(path)
    assert "weights_only" not in printed(e.value)


def test_the_random_state_round_trips_through_a_safe_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


def test_vzero_validate_loads_through_the_verified_plugin(tiny_random_path, saved, tmp_path, monkeypatch):
    import sys

    from vzero.__main__ import main

    monkeypatch.setattr(sys, "argv", ["vzero"])
    monkeypatch.chdir(tmp_path)
    damage(saved, "bit-flipped tensor")
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    args = ["--config", str(config), "--model.vlm.name_or_path", "tiny-random", "--trainer.logger", "false"]
    with pytest.raises(CheckpointError, match=f"checkpoint {saved} is corrupt"):
        main(["validate", *args, "--ckpt_path", str(saved)])


def test_a_checkpoint_holds_the_trainable_weights_only_and_never_a_nan():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[0].requires_grad_(False)  # the frozen base
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    kept = trainable_state(net, state)
    assert set(kept) == {"net.1.weight", "net.1.bias"}
    check_trainable(net, kept)
    with pytest.raises(KeyError, match="lacks 1 trainable weights"):
        check_trainable(net, {"net.1.weight": kept["net.1.weight"]})
    assert set(trained_weights({"state_dict": kept})) == {"1.weight", "1.bias"}
    check_finite(kept, "refusing", torch.device("cpu"))
    kept["net.1.bias"] = torch.tensor([0.0, float("inf")])
    with pytest.raises(FloatingPointError, match=r"refusing: 1 trainable tensor\(s\) hold NaN or inf \(e.g. net.1.b"):
        check_finite(kept, "refusing", torch.device("cpu"))

    def other_rank_holds_one(count, reduce_op):
        return count + 1

    with pytest.raises(FloatingPointError, match="on another rank"):
        check_finite({"net.1.weight": torch.zeros(2)}, "refusing", torch.device("cpu"), other_rank_holds_one)


def sharded_folder(root: Path) -> Path:
    """A folder laid out as ModelParallelStrategy writes a sharded checkpoint: the index, a shard, and ``meta.pt``."""
    folder = root / "last.ckpt"
    folder.mkdir(parents=True)
    (folder / SHARDED_INDEX).write_bytes(b"index")
    (folder / "__0_0.distcp").write_bytes(b"shard")
    torch.save({"global_step": 2, "vzero": {"mlflow_run_id": "abc", "schedule_steps": 4}}, folder / SHARDED_METADATA)
    return folder


def test_a_sharded_checkpoints_metadata_is_read_verified(tmp_path):
    folder = sharded_folder(tmp_path)
    assert load_sharded_metadata(folder)["vzero"] == {"mlflow_run_id": "abc", "schedule_steps": 4}
    damage(folder / SHARDED_METADATA, "bit-flipped header")
    with pytest.raises(CheckpointError, match=f"{folder / SHARDED_METADATA} is corrupt"):
        load_sharded_metadata(folder)


@pytest.mark.parametrize("lacks", [SHARDED_METADATA, SHARDED_INDEX])
def test_a_folder_that_is_not_a_whole_sharded_checkpoint_is_named(tmp_path, lacks):
    folder = sharded_folder(tmp_path)
    (folder / lacks).unlink()
    with pytest.raises(
        CheckpointError, match=f"{folder} is a folder, but not a whole sharded checkpoint: it lacks {lacks}"
    ):
        load_sharded_metadata(folder)
