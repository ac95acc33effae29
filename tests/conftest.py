"""Shared fixtures: the embedded tiny models (``tiny`` shipped, ``tiny-random`` built once into the cache), loaded per
test module."""

import contextlib
import os
from types import SimpleNamespace

import pytest
import torch

# Two cores on CI; OMP_NUM_THREADS wins when set (e.g. to 1 when something else shares the machine).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_random_path() -> str:
    from vzero.tiny import resolve

    return resolve("tiny-random")


@pytest.fixture(scope="session")
def tiny_path() -> str:
    """The pretrained tiny model, shipped in the package (verified against its manifest on load)."""
    from vzero.tiny import resolve

    return resolve("tiny")


@pytest.fixture(scope="module")
def tiny_random(tiny_random_path):
    from vzero.model import load_vlm

    model, processor = load_vlm(tiny_random_path, lora=None)
    return model.eval(), processor


@pytest.fixture(scope="module")
def random_policy(tiny_random):
    from vzero.model import Policy

    return Policy(*tiny_random)


@pytest.fixture(scope="session")
def family_path(tiny_random_path, tmp_path_factory):
    """``family_path(name)``: the folder of a toy model of each family the paper trains, built on first use.

    ``qwen2.5-vl`` is the embedded tiny-random model; ``qwen2-vl`` and ``internvl`` are :mod:`vzero.tiny.families`
    models with its tokenizer.
    """
    from vzero.tiny.families import build_family

    built = {"qwen2.5-vl": tiny_random_path}

    def get(family: str) -> str:
        if family not in built:
            built[family] = str(build_family(family, tmp_path_factory.mktemp(family), tiny_random_path))
        return built[family]

    return get


class ScriptedPolicy:
    """A stand-in for a Policy that answers a suite from a script: ``answer(question) -> response``, looked up by the
    prompt's text and picture. Records the size of every ``generate`` call."""

    def __init__(self, suite, answer, max_batch_size=64):
        from vzero.rollout.suites import question_text, side_by_side

        self.script = {self.key(question_text(q), side_by_side(q.images)): answer(q) for q in suite}
        self.calls: list[int] = []
        self.prompts: list = []
        self.decoding = SimpleNamespace(max_batch_size=max_batch_size)
        self.inputs = SimpleNamespace(pictures=list, prompt_ids=self.prompt_ids, text=lambda ids: self.prompts[ids[0]])

    @staticmethod
    def key(text, image):
        return text, image.size, image.tobytes()

    def prompt_ids(self, messages, picture):
        self.prompts.append(self.script[self.key(messages[0]["content"][1]["text"], picture)])
        return [len(self.prompts) - 1]

    def generate(self, prompts, pictures, sampling, keys=None, sides=None):
        from vzero.model.inputs import Completion

        self.calls.append(len(prompts))
        return [Completion(list(p), False) for p in prompts]

    @contextlib.contextmanager
    def frozen(self):
        yield self


@pytest.fixture(scope="session")
def scripted_policy():
    """``scripted_policy(suite, answer)``: a :class:`ScriptedPolicy`."""
    return ScriptedPolicy
