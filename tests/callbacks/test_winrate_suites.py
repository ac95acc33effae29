"""`eval.suites`: question suites answered at every evaluation, counted over ranks, validated at construction."""

from types import SimpleNamespace

import pytest
import torch

from vzero.data.pairs import ClevrPairs


def setup(policy, world=1, rank=0, reduce=lambda t, reduce_op: t):
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(pairs=ClevrPairs(n=8, seed=0, size=(64, 64))),
        world_size=world,
        global_rank=rank,
        strategy=SimpleNamespace(reduce=reduce),
        global_step=3,
        loggers=[],
    )
    return trainer, SimpleNamespace(policy=policy, device=torch.device("cpu"))


def test_suites_log_accuracy_interval_kinds_and_unparseable(scripted_policy):
    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation(games=2, suites=["clevr-diff:6", {"name": "clevr-qa", "questions": 5}])
    diff, qa = evaluation.built_suites(ClevrPairs(n=8, seed=0, size=(64, 64)))
    assert (diff.name, len(diff), qa.name, len(qa)) == ("clevr-diff", 6, "clevr-qa", 5)

    policy = scripted_policy(diff, lambda q: f"\\boxed{{{q.answer}}}")  # right on clevr-diff
    policy.script.update(scripted_policy(qa, lambda q: "I cannot tell.").script)  # no box on clevr-qa
    metrics = evaluation.answer_suites(*setup(policy))
    assert metrics["eval/clevr-diff/accuracy"] == 1.0 and metrics["eval/clevr-diff/unparseable"] == 0.0
    assert 0.5 < metrics["eval/clevr-diff/accuracy_lo"] < 1.0 == metrics["eval/clevr-diff/accuracy_hi"]
    assert {f"eval/clevr-diff/{k}/accuracy" for k in diff.kinds} <= set(metrics)
    assert metrics["eval/clevr-qa/accuracy"] == 0.0 and metrics["eval/clevr-qa/unparseable"] == 1.0
    assert (metrics["eval/clevr-diff/questions"], metrics["eval/clevr-qa/questions"]) == (6, 5)


def test_each_evaluation_logs_a_few_questions_with_their_pictures(scripted_policy, tmp_path):
    import json

    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation(games=2, transcripts=3, suites=["clevr-diff:5"])
    (diff,) = evaluation.built_suites(ClevrPairs(n=8, seed=0, size=(64, 64)))
    first = diff[0].text
    policy = scripted_policy(diff, lambda q: f"\\boxed{{{q.answer}}}" if q.text == first else "<img src=x> no box")
    trainer, module = setup(policy)
    trainer.loggers, trainer.default_root_dir = [SimpleNamespace()], str(tmp_path)  # a logger other than MLflow
    evaluation.answer_suites(trainer, module)
    folder = tmp_path / "transcripts" / "eval-step000003-clevr-diff"
    rows = [json.loads(line) for line in (folder / "suite.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2] and [r["correct"] for r in rows] == [True, False, False]
    assert rows[1]["parsed"] is False and rows[0]["answer"] == diff[0].answer
    page = (folder / "suite.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 6  # 3 questions of 2 pictures each
    assert "3 questions shown: 1 answered right" in page
    assert "&lt;img src=x&gt;" in page and "<img src=x>" not in page  # model text is escaped, never markup
    assert diff[0].text.split(".")[0] in page


def test_counts_are_summed_over_ranks_before_the_rates(scripted_policy):
    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation(games=2, suites=["clevr-diff:7"])
    (suite,) = evaluation.built_suites(ClevrPairs(n=8, seed=0, size=(64, 64)))
    answer = {q.text: ("\\boxed{1}" if i % 2 else f"\\boxed{{{q.answer}}}") for i, q in enumerate(suite)}
    shares, policies = [], []
    for rank in range(2):
        policies.append(scripted_policy(suite, lambda q: answer[q.text], max_batch_size=2))
        calls = []

        def reduce(t, reduce_op, calls=calls):
            calls.append(t.clone())
            return t

        evaluation.answer_suites(*setup(policies[-1], world=2, rank=rank, reduce=reduce))
        shares.append(calls[0])
    assert policies[0].calls == policies[1].calls == [2, 2]  # 4 and 3 questions: the same calls on both ranks
    total = shares[0] + shares[1]
    single = evaluation.answer_suites(*setup(scripted_policy(suite, lambda q: answer[q.text]), reduce=lambda t, **_: t))
    summed = evaluation.answer_suites(*setup(policies[0], world=2, rank=0, reduce=lambda t, reduce_op: total))
    assert summed == single and summed["eval/clevr-diff/questions"] == 7


@pytest.mark.parametrize(
    ("suites", "message"),
    [
        (["clevr-qa:0"], "eval.suites: suite 'clevr-qa': questions must be an int >= 1"),
        (["clevr-qa:lots"], "eval.suites: 'clevr-qa:lots': after ':' comes the number of questions"),
        ([{"name": "clevr-qa", "count": 3}], "eval.suites: unknown field"),
        (["chart-qa", "chart-qa:10"], "eval.suites: ['chart-qa'] given more than once"),
    ],
)
def test_bad_suites_are_refused_naming_the_key(suites, message):
    from vzero.callbacks import WinRateEvaluation

    with pytest.raises(ValueError) as error:
        WinRateEvaluation(suites=suites)
    assert message in str(error.value)


def test_an_unknown_suite_or_a_bad_file_is_refused_naming_the_key(tmp_path):
    from vzero.callbacks import WinRateEvaluation

    with pytest.raises(ValueError, match="eval.suites: 'clevr-vqa' is neither a suite name"):
        WinRateEvaluation(suites=["clevr-vqa"])
    (tmp_path / "mine.jsonl").write_text('{"question": "What?"}\n')
    with pytest.raises(ValueError, match='eval.suites: .*mine.jsonl:1: missing "images"'):  # read when configured
        WinRateEvaluation(suites=[str(tmp_path / "mine.jsonl")])
    with pytest.raises(ValueError, match="eval.suite_tokens"):
        WinRateEvaluation(suite_tokens=0)


def test_no_suites_by_default():
    from vzero.callbacks import WinRateEvaluation

    evaluation = WinRateEvaluation()
    assert evaluation.suites == [] and evaluation.answer_suites(*setup(None)) == {}


def test_an_evaluation_logs_the_suites_beside_the_win_rate(tiny_random_path):
    from vzero.callbacks import WinRateEvaluation
    from vzero.game import GameConfig
    from vzero.model import Policy, load_vlm
    from vzero.model.sampling import SamplingByStage, SamplingConfig

    model, processor = load_vlm(tiny_random_path)  # LoRA at its start: the reference plays the same
    logged = []
    trainer, module = setup(Policy(model.eval(), processor))
    trainer.datamodule.game = GameConfig(n_civilians=2, clue_rounds=1)
    trainer.datamodule.sampling = SamplingByStage(SamplingConfig(max_new_tokens=4), SamplingConfig(max_new_tokens=4))
    trainer.callback_metrics = {}
    trainer.loggers = [SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics)))]
    evaluation = WinRateEvaluation(games=2, transcripts=0, suites=["clevr-qa:3"], suite_tokens=4)
    metrics = evaluation.evaluate(trainer, module)
    assert metrics["eval/win_rate"] == 0.5 and metrics["eval/clevr-qa/questions"] == 3
    assert logged == [(3, metrics)] and "eval/clevr-qa/accuracy_lo" in trainer.callback_metrics
