"""``vzero pairs``: write procedural image pairs to a folder, in the reference release's layout.

Each pair ``i`` becomes ``{i:06d}_original.png``, ``{i:06d}_modified.png`` and ``{i:06d}.json`` (its ground truth).
The JSON is written last, so its presence marks a finished pair: a second run skips finished pairs and continues.
``manifest.jsonl`` lists every finished pair: it is rebuilt from the finished pairs when a run starts, and each new pair
is appended as soon as it is written, so an interrupted run still leaves a usable folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from vzero.data.pairs import ChartPairs, ClevrPairs, PairSource

DATASET_FILE = "dataset.json"


def parse_size(size: str) -> tuple[int, int]:
    """``"480x320"`` -> ``(480, 320)``."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like WIDTHxHEIGHT (e.g. 480x320), got {size!r}") from None
    if w < 16 or h < 16:
        raise ValueError(f"--size must be at least 16x16, got {size!r}")
    return w, h


def pairs(source: Literal["clevr", "chart"], n: int, out: Path, seed: int = 0, size: str = "480x320") -> Path:
    """Write ``n`` label-free image pairs to ``out``; running it again continues where it stopped.

    Args:
        source: the procedural source: ``clevr`` (3D-looking object scenes) or ``chart`` (bar, line and pie charts).
        n: how many pairs the folder should hold.
        out: the folder to write (created if missing).
        seed: pair ``i`` depends only on ``(seed, i)``.
        size: picture size, ``WIDTHxHEIGHT``.

    Returns:
        The path of the manifest.
    """
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    width, height = parse_size(size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_dataset(out, {"source": source, "seed": seed, "size": [width, height]})
    cls = {"clevr": ClevrPairs, "chart": ChartPairs}[source]
    src: PairSource = cls(n=n, seed=seed, size=(width, height))
    todo = [i for i in range(n) if not _finished(out, _name(i))]
    manifest = _write_manifest(out)
    with open(manifest, "a") as fh:
        for i in tqdm(todo, desc=f"{source} pairs", unit="pair", initial=n - len(todo), total=n):
            fh.write(_manifest_line(_write_pair(out, _name(i), src[i])) + "\n")
            fh.flush()
    return manifest


def _name(i: int) -> str:
    return f"{i:06d}"


def _finished(out: Path, name: str) -> bool:
    return all((out / f).is_file() for f in (f"{name}.json", f"{name}_original.png", f"{name}_modified.png"))


def _check_same_dataset(out: Path, spec: dict) -> None:
    path = out / DATASET_FILE
    if path.exists():
        old = json.loads(path.read_text())
        for key, value in spec.items():
            if old.get(key) != value:
                raise ValueError(
                    f"{path} was written with {key}={old.get(key)!r}, not {value!r}: "
                    "continuing would mix two datasets; choose another --out"
                )
    else:
        _atomic_write(path, json.dumps(spec, indent=1).encode())


def _write_pair(out: Path, name: str, pair) -> Path:
    for kind, image in (("original", pair.original), ("modified", pair.modified)):
        tmp = out / f".{name}_{kind}.png.tmp"
        image.save(tmp, format="PNG")
        os.replace(tmp, out / f"{name}_{kind}.png")
    meta_path = out / f"{name}.json"
    _atomic_write(meta_path, json.dumps({"domain": pair.domain, **pair.meta}).encode())
    return meta_path


def _manifest_line(meta_path: Path) -> str:
    name, meta = meta_path.stem, json.loads(meta_path.read_text())
    entry = {"original": f"{name}_original.png", "modified": f"{name}_modified.png", "domain": meta.pop("domain")}
    return json.dumps({**entry, "meta": meta})


def _write_manifest(out: Path) -> Path:
    finished = [p for p in sorted(out.glob("[0-9]*.json")) if _finished(out, p.stem)]
    manifest = out / "manifest.jsonl"
    _atomic_write(manifest, "".join(_manifest_line(p) + "\n" for p in finished).encode())
    return manifest


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
