import json
import re
import shutil
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib

from vzero.tiny import manifest, recipe, resolve
from vzero.tiny.pretrain import REPORT

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_resolves_to_the_shipped_folder_and_its_files_match_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("VZERO_CACHE", str(tmp_path / "empty"))  # nothing is built or cached
    assert Path(resolve("tiny")) == manifest.SHIPPED
    assert not (tmp_path / "empty").exists()
    listed = json.loads((manifest.SHIPPED / manifest.MANIFEST).read_text())["files"]
    on_disk = {p.name for p in manifest.SHIPPED.iterdir() if p.name != manifest.MANIFEST}
    assert set(listed) == on_disk
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json", REPORT} <= on_disk
    assert sum(f["bytes"] for f in listed.values()) <= 25 * 2**20


def test_the_package_data_ships_every_file_of_the_manifest():
    """A non-editable install carries the folder: pyproject's package-data covers each file the manifest lists."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["vzero.tiny"]
    for name in [*json.loads((manifest.SHIPPED / manifest.MANIFEST).read_text())["files"], manifest.MANIFEST]:
        assert any(fnmatch(f"shipped/{name}", p) for p in patterns), name


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(manifest.SHIPPED, copy)
    return copy


def test_a_damaged_file_is_an_error_naming_it(shipped_copy):
    assert manifest.verify(shipped_copy) == shipped_copy
    weights = shipped_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: same size, other content
    weights.write_bytes(bytes(data))
    with pytest.raises(manifest.ShippedModelError, match=r"model\.safetensors does not match .*MANIFEST\.json"):
        manifest.verify(shipped_copy)


def test_a_missing_file_or_manifest_is_an_error_naming_it(shipped_copy):
    (shipped_copy / "tokenizer.json").unlink()
    with pytest.raises(manifest.ShippedModelError, match=r"tokenizer\.json is missing"):
        manifest.verify(shipped_copy)
    (shipped_copy / manifest.MANIFEST).write_text("{not json")
    with pytest.raises(manifest.ShippedModelError, match=r"MANIFEST\.json is not a valid manifest"):
        manifest.verify(shipped_copy)
    (shipped_copy / manifest.MANIFEST).unlink()
    with pytest.raises(manifest.ShippedModelError, match=r"MANIFEST\.json is missing"):
        manifest.verify(shipped_copy)


@pytest.mark.slow
def test_the_recipe_rebuilds_a_verified_folder_from_scratch(tmp_path, capsys):
    """The rebuild command end to end, with a few steps: random build, pretraining, report and manifest."""
    out = tmp_path / "tiny"
    recipe.main(
        [
            "--out",
            str(out),
            "--steps",
            "2",
            "--reading-steps",
            "2",
            "--vision-steps",
            "2",
            "--train-games",
            "4",
            "--eval-games",
            "2",
        ]
    )
    assert manifest.verify(out) == out
    written = json.loads((out / manifest.MANIFEST).read_text())
    assert written["pretrain"]["steps"] == 2 and written["recipe"] == manifest.REBUILD
    assert set(written["files"]) == set(json.loads((manifest.SHIPPED / manifest.MANIFEST).read_text())["files"])
    assert json.loads((out / REPORT).read_text())["steps"] == 2
    assert "built in" in capsys.readouterr().out


def test_the_readme_quotes_the_shipped_report():
    """Every figure of the README's shipped-model table is the shipped report's, to the digits shown."""
    report = json.loads((manifest.SHIPPED / REPORT).read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- shipped-report -->")[1].split("<!-- /shipped-report -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) \|", block, re.M)
    assert len(rows) >= 8
    for key, shown in rows:
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        assert f"{report[key]:.{decimals}f}" == shown, key


def test_remeasure_rewrites_the_report_and_manifest_and_leaves_the_weights(shipped_copy):
    from vzero.tiny import report
    from vzero.tiny.pretrain import GAME_CONFIGS, IMAGE_SIZE

    listed = json.loads((shipped_copy / manifest.MANIFEST).read_text())
    listed["pretrain"]["eval_games"] = 2  # a quick measure of the copy
    (shipped_copy / manifest.MANIFEST).write_text(json.dumps(listed))
    before = json.loads((shipped_copy / REPORT).read_text())
    weights = (shipped_copy / "model.safetensors").read_bytes()
    measured = report.remeasure(shipped_copy, GAME_CONFIGS[1:2], IMAGE_SIZE)
    assert measured["eval_games"] == 2 and list(measured["by_game"]) == [report.game_name(GAME_CONFIGS[1])]
    assert measured["train_seconds"] == before["train_seconds"]  # the training figures are kept
    assert json.loads((shipped_copy / REPORT).read_text()) == measured
    assert (shipped_copy / "model.safetensors").read_bytes() == weights
    assert manifest.verify(shipped_copy) == shipped_copy  # the rewritten manifest matches the rewritten report
