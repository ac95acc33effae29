import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from vzero.__main__ import main
from vzero.data.pairs import ClevrPairs, FolderImages, blank_like
from vzero.game import Game, GameConfig
from vzero.model import Completion, DecodingConfig, Policy
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.model.text import SafeText, control_tokens
from vzero.rollout import RolloutEngine

GREEDY = SamplingByStage(
    SamplingConfig(temperature=0, max_new_tokens=10), SamplingConfig(temperature=0, max_new_tokens=6)
)
CONFIG = GameConfig(n_civilians=3, clue_rounds=2)


@pytest.fixture(scope="module")
def pairs():
    source = ClevrPairs(n=4, seed=7, size=(240, 160))
    return [source[i] for i in range(4)]


def reference_spy(turn) -> str:
    return "reference" if turn.role == "spy" else "trained"


class CountingPolicy(Policy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes = []

    def _decode_batch(self, inputs, *args):
        self.batch_sizes.append(len(inputs.input_ids))
        return super()._decode_batch(inputs, *args)


def test_batched_play_equals_per_game_play(random_policy, pairs):
    engine = RolloutEngine(random_policy)
    together = engine.play(pairs, CONFIG, GREEDY, seeds=[10, 11, 12, 13]).transcripts
    for pair, seed, t in zip(pairs, [10, 11, 12, 13], together):
        (alone,) = engine.play([pair], CONFIG, GREEDY, seeds=[seed]).transcripts
        assert [s.completion_ids for s in alone.samples] == [s.completion_ids for s in t.samples]
        assert [s.prompt_ids for s in alone.samples] == [s.prompt_ids for s in t.samples]


def test_one_generate_per_speaker_slot_and_one_for_all_votes(tiny_random, pairs):
    policy = CountingPolicy(*tiny_random)
    RolloutEngine(policy).play(pairs, CONFIG, GREEDY)
    n_players, rounds = CONFIG.n_players, CONFIG.clue_rounds
    assert policy.batch_sizes == [4] * (n_players * rounds) + [4 * CONFIG.n_civilians]
    chunked = CountingPolicy(*tiny_random, decoding=DecodingConfig(max_batch_size=3))
    RolloutEngine(chunked).play(pairs, CONFIG, GREEDY)
    assert chunked.batch_sizes == [3, 1] * (n_players * rounds) + [3, 3, 3, 3]


def test_reference_rows_share_their_turns_call(tiny_path, pairs):
    from vzero.model import load_vlm

    policy = CountingPolicy(*load_vlm(tiny_path))  # with an adapter: the reference rows run with it off
    RolloutEngine(policy).play(pairs, CONFIG, GREEDY, side_of=reference_spy)
    assert policy.batch_sizes == [4] * (CONFIG.n_players * CONFIG.clue_rounds) + [4 * CONFIG.n_civilians]


def test_each_turn_carries_its_speakers_picture(random_policy, pairs):
    (t,) = RolloutEngine(random_policy).play(pairs[:1], CONFIG, GREEDY, seeds=[5]).transcripts
    original, modified = random_policy.inputs.pictures([pairs[0].original, pairs[0].modified])
    for s in t.samples:
        expected = modified if s.turn.stage == "clue" and s.turn.player == t.spy else original
        assert torch.equal(s.picture.pixel_values, expected.pixel_values)
    assert t.views[t.spy] == "modified"


def test_blank_spies_see_a_blank_picture(random_policy, pairs, tmp_path):
    pairs[0].original.save(tmp_path / "photo.png")
    photo = FolderImages(tmp_path)[0]
    for pair, config in ((photo, CONFIG), (pairs[1], GameConfig(n_civilians=3, spy_view="blank"))):
        (t,) = RolloutEngine(random_policy).play([pair], config, GREEDY).transcripts
        spy_turn = next(s for s in t.samples if s.turn.player == t.spy)
        assert spy_turn.turn.view == "blank"
        (blank,) = random_policy.inputs.pictures([blank_like(pair.original)])
        assert torch.equal(spy_turn.picture.pixel_values, blank.pixel_values)


def test_token_in_token_out(random_policy, pairs):
    sampling = SamplingByStage(SamplingConfig(max_new_tokens=8), SamplingConfig(max_new_tokens=8))
    transcripts = RolloutEngine(random_policy).play(pairs, CONFIG, sampling).transcripts
    samples = [s for t in transcripts for s in t.samples]
    for s in samples:
        stopped = bool(set(s.completion_ids) & random_policy.ids.eos)
        assert stopped != s.truncated
        if stopped:
            assert s.completion_ids[-1] in random_policy.ids.eos
        assert s.text == random_policy.inputs.text(s.completion_ids)
    inputs = random_policy.inputs.pack(
        [s.prompt_ids for s in samples], [s.picture for s in samples], [s.completion_ids for s in samples]
    )
    with torch.no_grad():
        logp = random_policy.logprobs(inputs)
    assert logp.shape == (len(samples), max(len(s.completion_ids) for s in samples))
    assert torch.isfinite(logp).all()


def test_gibberish_is_counted_not_fatal(random_policy, pairs):
    sampling = SamplingByStage(
        SamplingConfig(temperature=1.5, max_new_tokens=12), SamplingConfig(temperature=1.5, max_new_tokens=12)
    )
    transcripts = RolloutEngine(random_policy).play(pairs, CONFIG, sampling).transcripts
    votes = [v for t in transcripts for v in t.votes]
    assert votes and set(votes) <= {"invalid", "n/a", 0, 1, 2, 3}
    assert votes.count("invalid") >= len(votes) // 2  # an untrained model rarely writes a valid box


def test_reference_turns_run_with_the_adapter_off(tiny_random_path, pairs):
    from vzero.model import load_vlm

    model, processor = load_vlm(tiny_random_path)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0)
    policy = Policy(model.eval(), processor)
    base = Policy(load_vlm(tiny_random_path, lora=None)[0].eval(), processor)
    mixed = RolloutEngine(policy).play(pairs[:2], CONFIG, GREEDY, seeds=[1, 2], side_of=reference_spy).transcripts
    trained = RolloutEngine(policy).play(pairs[:2], CONFIG, GREEDY, seeds=[1, 2]).transcripts
    reference = RolloutEngine(base).play(pairs[:2], CONFIG, GREEDY, seeds=[1, 2]).transcripts
    for m, tr, ref in zip(mixed, trained, reference):
        first_spy = next(i for i, s in enumerate(m.samples) if s.turn.role == "spy")
        assert m.samples[first_spy].side == "reference" and (m.samples[0].side == "reference") == (m.spy == 0)
        # Up to the spy's first turn, the mixed game is the trained game; the spy's turn is the reference's.
        assert [s.completion_ids for s in m.samples[:first_spy]] == [s.completion_ids for s in tr.samples[:first_spy]]
        if first_spy == 0:
            assert m.samples[0].completion_ids == ref.samples[0].completion_ids


# ---- model text that spells control tokens ----------------------------------------------------------------------


def spell(policy: Policy, prompt: list[int]) -> list[int]:
    """Ids that spell every control token with ordinary tokens (sampling cannot suppress these), then the EOS: inside
    the box of a clue, before the box of a vote for player 2."""
    tok = policy.processor.tokenizer
    tokens = control_tokens(policy.processor)
    spelled = " ".join(tokens) + "".join(tokens) + "<|im_<|im_end|>end|>"  # adjacent and nested spellings too
    voting = "Which player is the spy?" in tok.decode(prompt)
    text = f"{spelled} \\boxed{{2}}" if voting else f"I see \\boxed{{A cube {spelled} here}}"
    ids = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
    assert not set(ids) & set(tok.added_tokens_decoder) and tok.decode(ids, skip_special_tokens=True) == text
    return ids + [min(policy.ids.eos)]


def spelling_generate(generate, seen: list[str] | None = None):
    """Wrap ``Policy.generate``: the model still runs on every prompt, then each completion is replaced by `spell`.
    The prompts' text goes to ``seen`` when given."""

    def wrapped(self, prompts, pictures, sampling, *args, **kwargs):
        generate(self, prompts, pictures, sampling, *args, **kwargs)
        if seen is not None:
            seen.extend(self.processor.tokenizer.decode(p) for p in prompts)
        return [Completion(spell(self, p), False) for p in prompts]

    return wrapped


def control_counts(policy: Policy, ids: list[int]) -> Counter:
    added = set(policy.processor.tokenizer.added_tokens_decoder)
    return Counter(i for i in ids if i in added)


def test_spelled_control_tokens_stay_text_in_every_later_prompt(tiny_random, pairs, monkeypatch):
    monkeypatch.setattr(Policy, "generate", spelling_generate(Policy.generate))
    policy = Policy(*tiny_random)
    transcripts = RolloutEngine(policy).play(pairs[:2], CONFIG, GREEDY, seeds=[3, 4]).transcripts
    safe = SafeText.for_processor(policy.processor)
    for t in transcripts:
        template = Game(CONFIG, seed=t.seed).pending()[0].messages  # the first turn's prompt: no clues, no votes
        for s in t.samples:
            assert s.completion_ids == spell(policy, s.prompt_ids)  # training scores the ids exactly as sampled
            assert s.text == safe(policy.inputs.text(s.completion_ids)) != policy.inputs.text(s.completion_ids)
            expected = control_counts(policy, policy.inputs.prompt_ids(template, s.picture))
            assert control_counts(policy, s.prompt_ids) == expected
        assert all(c is not None and "< |image_pad|>" in c for r in t.clues for c in r)
        assert t.votes == [1] * len(t.votes)  # the vote still parses
        last_prompt = policy.processor.tokenizer.decode(t.samples[-1].prompt_ids)
        assert "A cube < |endoftext|> < |im_end|> < |im_start|> < |image_pad|>" in last_prompt  # readable in logs


def test_a_fit_whose_policy_spells_control_tokens_completes(tiny_random_path, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["vzero"])
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    monkeypatch.setattr(Policy, "generate", spelling_generate(Policy.generate, seen))
    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    fast = ["--data.games_per_step", "2", "--eval.games", "4", "--eval.every_n_steps", "2", "--eval.at_start", "false"]
    main(["fit", "--config", tiny, *fast, "--model.vlm.name_or_path", "tiny-random", "--trainer.max_steps", "2"])
    assert any("A cube < |endoftext|> < |im_end|>" in prompt for prompt in seen)  # the spellings reached prompts
