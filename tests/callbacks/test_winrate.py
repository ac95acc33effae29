from types import SimpleNamespace

import pytest
import torch

from vzero.game import GameConfig


@pytest.mark.parametrize("games", [0, 3])
def test_games_must_be_even(games):
    from vzero.callbacks import WinRateEvaluation

    with pytest.raises(ValueError, match="eval.games"):
        WinRateEvaluation(games=games)


SELF_PLAY = dict(n_civilians=3, clue_rounds=1)


def evaluation_setup(policy, world=1, rank=0, n_pairs=40):
    from vzero.data.pairs import ClevrPairs
    from vzero.model.sampling import SamplingByStage, SamplingConfig

    datamodule = SimpleNamespace(
        game=GameConfig(**SELF_PLAY),
        sampling=SamplingByStage(SamplingConfig(max_new_tokens=24), SamplingConfig(max_new_tokens=64)),
        pairs=ClevrPairs(n=n_pairs, seed=0, size=(120, 80)),
    )
    trainer = SimpleNamespace(
        datamodule=datamodule,
        world_size=world,
        global_rank=rank,
        strategy=SimpleNamespace(reduce=lambda t, reduce_op: t),
        callback_metrics={},
        loggers=[],
        global_step=0,
    )
    return trainer, SimpleNamespace(policy=policy, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def adapter_policy(tiny_path):
    from vzero.model import Policy, load_vlm

    model, processor = load_vlm(tiny_path)  # LoRA at its initial value: the policy is its own reference
    return Policy(model.eval(), processor)


@pytest.mark.parametrize("seed", [0, 7])
def test_a_policy_against_itself_scores_exactly_one_half(adapter_policy, seed):
    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation(games=10, seed=seed)  # 5 games per half on one rank, sampled at T = 1
    trainer, module = evaluation_setup(adapter_policy)
    as_civilians, as_spy = evaluation.play_halves(trainer, module)
    # The two halves replay the same games: every turn's tokens are equal, only who played them differs.
    for a, b in zip(as_civilians, as_spy):
        assert [s.completion_ids for s in a.samples] == [s.completion_ids for s in b.samples]
        assert [s.side == "reference" for s in a.samples] == [s.side != "reference" for s in b.samples]
    assert len({tuple(s.completion_ids) for t in as_civilians for s in t.samples}) > 10  # sampled, not degenerate
    assert any(v != "invalid" for t in as_civilians for v in t.votes)  # real votes decide these games
    metrics = evaluation.evaluate(trainer, module)
    assert metrics["eval/win_rate"] == 0.5
    assert metrics["eval/win_rate_civilian"] + metrics["eval/win_rate_spy"] == 1.0
    assert trainer.callback_metrics["eval/step"] == 0


def test_a_full_finetune_against_its_frozen_copy_scores_exactly_one_half(tiny_path):
    from vzero.callbacks import WinRateEvaluation
    from vzero.model import Policy, load_vlm, reference_copy

    model, processor = load_vlm(tiny_path, lora=None)  # no adapter: the reference is a frozen copy, its own calls
    policy = Policy(model.eval(), processor, reference_copy=reference_copy(model))
    evaluation = WinRateEvaluation(games=8, seed=5)
    trainer, module = evaluation_setup(policy)
    as_civilians, as_spy = evaluation.play_halves(trainer, module)
    for a, b in zip(as_civilians, as_spy):
        assert [s.completion_ids for s in a.samples] == [s.completion_ids for s in b.samples]
    assert evaluation.evaluate(trainer, module)["eval/win_rate"] == 0.5


def test_ranks_split_the_games_and_pad_to_the_same_number_of_calls(adapter_policy):
    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation(games=6, seed=3)  # 3 pairs over 2 ranks: 2 games, and 1 game + 1 padding
    played = [evaluation.play_halves(*evaluation_setup(adapter_policy, world=2, rank=r)) for r in (0, 1)]
    assert [len(civ) for civ, _ in played] == [2, 1]
    single = evaluation.play_halves(*evaluation_setup(adapter_policy))
    by_seed = {t.seed: t for t in single[0]}
    for civ, _ in played:  # the same games as on one rank: keys follow the game, not the rank
        for t in civ:
            assert [s.completion_ids for s in t.samples] == [s.completion_ids for s in by_seed[t.seed].samples]


def test_a_trained_adapter_breaks_the_tie(tiny_path):
    from vzero.callbacks import WinRateEvaluation
    from vzero.model import Policy, load_vlm

    model, processor = load_vlm(tiny_path)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    trainer, module = evaluation_setup(Policy(model.eval(), processor))
    as_civilians, as_spy = WinRateEvaluation(games=10).play_halves(trainer, module)
    differ = sum(
        [s.completion_ids for s in a.samples] != [s.completion_ids for s in b.samples]
        for a, b in zip(as_civilians, as_spy)
    )
    assert differ > 0  # the equality above comes from the policies being equal, not from the mechanism


def test_evaluation_pairs_are_held_out_from_training():
    from vzero.callbacks import WinRateEvaluation
    from vzero.data.pairs import ClevrPairs, FolderPairs, PairSourceError

    training = ClevrPairs(n=50, seed=0, size=(64, 64))
    chosen = WinRateEvaluation(games=8).evaluation_pairs(training)
    assert len(chosen) == 4 and all(p.meta["seed"] != training.seed for p in chosen)
    seen = {training[i].meta["description"] for i in range(50)}
    assert not {p.meta["description"] for p in chosen} & seen
    explicit = ClevrPairs(n=8, seed=5, size=(64, 64))
    assert [p.meta["index"] for p in WinRateEvaluation(games=8, pairs=explicit).evaluation_pairs(training)] == [
        0,
        2,
        4,
        6,
    ]
    with pytest.raises(PairSourceError, match="eval.pairs"):
        FolderPairs.held_out(SimpleNamespace(), 4)


def test_the_final_evaluation_runs_inside_the_last_step_once():
    from vzero.callbacks import WinRateEvaluation

    callback = WinRateEvaluation(games=2, every_n_steps=2)
    steps = []

    def evaluate(trainer, module):
        steps.append(trainer.global_step)
        callback.last_step = trainer.global_step

    callback.evaluate = evaluate
    trainer = SimpleNamespace(global_step=0, max_steps=3)
    for step in (1, 2, 2, 3):  # step 2 twice: an update skipped for a non-finite loss leaves the step where it was
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, step)
    callback.on_train_end(trainer, None)
    assert steps == [2, 3]  # every 2 steps, and the last step's before its checkpoint, not again at the end
    trainer.max_steps, trainer.global_step = -1, 5  # training without max_steps is evaluated when it ends
    callback.on_train_batch_end(trainer, None, None, None, 5)
    callback.on_train_end(trainer, None)
    assert steps == [2, 3, 5]
