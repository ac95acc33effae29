import json

import pytest

from vzero.__main__ import main
from vzero.cli.pairs import pairs, parse_size
from vzero.data.pairs import FolderPairs


def test_pairs_writes_reference_layout_and_manifest(tmp_path):
    manifest = pairs("clevr", 3, tmp_path, seed=1, size="96x64")
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [e["original"] for e in lines] == [f"00000{i}_original.png" for i in range(3)]
    assert all(e["domain"] == "clevr" and "changes" in e["meta"] for e in lines)
    for i in range(3):
        assert (tmp_path / f"00000{i}_modified.png").is_file()
        assert json.loads((tmp_path / f"00000{i}.json").read_text())["index"] == i
    loaded = FolderPairs(tmp_path)
    assert len(loaded) == 3 and loaded[0].original.size == (96, 64)
    assert loaded[2].meta["changes"] == lines[2]["meta"]["changes"]


def test_pairs_continues_without_rewriting_finished_pairs(tmp_path):
    pairs("chart", 2, tmp_path, size="120x96")
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("00000[01]*")}
    (tmp_path / "000001.json").unlink()  # as if the run died while writing pair 1
    pairs("chart", 4, tmp_path, size="120x96")
    assert (tmp_path / "000000_original.png").stat().st_mtime_ns == stamps["000000_original.png"]
    assert (tmp_path / "000001.json").exists()
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 4
    assert len(FolderPairs(tmp_path)) == 4


def test_pairs_refuses_to_mix_datasets(tmp_path):
    pairs("clevr", 1, tmp_path, seed=0, size="64x64")
    with pytest.raises(ValueError, match="seed=0"):
        pairs("clevr", 2, tmp_path, seed=1, size="64x64")


@pytest.mark.parametrize("bad", ["480", "axb", "480x", "8x8"])
def test_size_errors_name_the_flag(bad):
    with pytest.raises(ValueError, match="--size"):
        parse_size(bad)


def test_command_line(tmp_path, capsys):
    main(["pairs", "--source", "clevr", "--n", "2", "--out", str(tmp_path), "--size", "64x48"])
    assert "manifest.jsonl" in capsys.readouterr().out
    assert len(FolderPairs(tmp_path)) == 2


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2 and "unknown command" in capsys.readouterr().err
