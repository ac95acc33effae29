"""Where the tiny models live: ``tiny`` ships inside the package, ``tiny-random`` is built once into a cache.

``tiny`` resolves to the package's own folder (:mod:`vzero.tiny.manifest`), its files checked against their manifest
of SHA-256s on every load; nothing is built or downloaded. ``tiny-random`` resolves to a folder in ``$VZERO_CACHE``
(default ``~/.cache/vzero``) whose name carries a hash of the source of every module that decides what the model
contains (the builder, the tokenizer and the prompts it is trained on, the renderer), so a changed recipe is rebuilt
rather than a stale cache reused, while moving a module without changing it keeps the cache. The same hash over the
pretraining recipe is recorded in the shipped manifest, to tell which code built the shipped weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from vzero.data.pairs import clevr, clevr_render
from vzero.game import prompts
from vzero.model import decode, inputs, policy, step
from vzero.tiny import build, manifest, pretrain, report, targets, tokenizer

log = logging.getLogger(__name__)

NAMES = ("tiny", "tiny-random")
RANDOM_RECIPE = (build, tokenizer, prompts, clevr, clevr_render)
PRETRAINED_RECIPE = (*RANDOM_RECIPE, pretrain, targets, report, policy, inputs, decode, step)


def recipe_fingerprint(modules: tuple[ModuleType, ...]) -> str:
    """A hash of the source of ``modules``: the same code gives the same folder, wherever the modules live."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:10]


def cache_dir() -> Path:
    return Path(os.environ.get("VZERO_CACHE") or "~/.cache/vzero").expanduser()


def resolve(name_or_path: str) -> str:
    """Map ``tiny`` to the shipped folder and ``tiny-random`` to its cached one (built once); pass anything else
    through."""
    if name_or_path == "tiny-random":
        return str(ensure_random())
    if name_or_path == "tiny":
        return str(ensure_pretrained())
    return name_or_path


def ensure_random(seed: int = 0) -> Path:
    """The random-init model's folder, built once."""
    path = cache_dir() / f"tiny-random-{recipe_fingerprint(RANDOM_RECIPE)}"
    return _ensure(path, lambda out: build.build_random(out, seed))


def ensure_pretrained() -> Path:
    """The pretrained model's folder: the one shipped in the package, its files verified against the manifest."""
    return manifest.verify(manifest.SHIPPED)


def _ensure(path: Path, build) -> Path:
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        if (path / "config.json").exists():  # another process built it while we waited
            return path
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("building %s (once; cached afterwards)", path)
        build(tmp)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # One builder at a time across processes (pytest workers, DDP ranks); the others wait, then reuse its result.
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
