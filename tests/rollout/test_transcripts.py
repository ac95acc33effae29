"""Transcripts: every turn of real games in the JSONL file, and a self-contained page that escapes model text."""

import dataclasses
import json

import pytest

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, Stage
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rl.advantages import RoleBaselines
from vzero.rollout import RolloutEngine, build_batch
from vzero.rollout.batch import score_samples
from vzero.rollout.transcripts import turn_rows, write_transcripts

SHORT = SamplingByStage(
    SamplingConfig(temperature=1.0, max_new_tokens=6), SamplingConfig(temperature=1.0, max_new_tokens=4)
)
CONFIG = GameConfig(n_civilians=3, clue_rounds=2)


@pytest.fixture(scope="module")
def games(random_policy):
    source = ClevrPairs(n=2, seed=5, size=(120, 80))
    pairs = [source[0], source[1]]
    return RolloutEngine(random_policy).play(pairs, CONFIG, SHORT, seeds=[3, 4], sample_seed=9)


def test_rows_carry_every_turn_with_its_reward_and_the_batchs_advantage(games):
    transcripts = games.transcripts
    batch = build_batch(games, score_samples(transcripts, RoleBaselines(CONFIG.alpha)))
    rows = turn_rows(transcripts, batch.game_advantages())
    assert len(rows) == len(batch) == 2 * (4 * 2 + 3)  # 4 players x 2 rounds of clues, 3 civilian votes
    assert [r["advantage"] for r in rows] == pytest.approx(batch.advantage.tolist())
    assert [r["reward"] for r in rows] == pytest.approx(batch.reward.tolist())
    for r, s in zip(rows, [s for t in transcripts for s in t.samples]):
        assert r["completion"] == s.text and r["completion_len"] == len(s.completion_ids)
        assert r["prompt_len"] == len(s.prompt_ids) and r["truncated"] == s.truncated
        assert r["stage"] == str(s.turn.stage) and r["role"] == s.turn.role and r["player"] == s.turn.player
    votes = [r for r in rows if r["stage"] == Stage.DECISION]
    assert [r["parsed"] for r in votes] == [v for t in transcripts for v in t.votes]
    assert {r["winner"] for r in rows} <= {"civilians", "spy"}


def test_the_page_embeds_the_pictures_and_escapes_model_text(games, tmp_path):
    pairs, transcripts = games.pairs, games.transcripts
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    first = transcripts[0]
    tampered = dataclasses.replace(first, samples=[dataclasses.replace(first.samples[0], text=hostile)])
    tampered.samples += first.samples[1:]
    page, jsonl = write_transcripts(tmp_path, pairs, [tampered, transcripts[1]], title="<b>step 3</b>")
    text = page.read_text()
    assert "<script>" not in text and "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text and "&lt;b&gt;step 3&lt;/b&gt;" in text
    assert text.count("data:image/png;base64,") == 4 and "http" not in text.replace("http-equiv", "")
    assert json.loads(jsonl.read_text().splitlines()[0])["completion"] == hostile  # the JSONL keeps the raw text


def test_pairs_and_transcripts_must_line_up(games, tmp_path):
    pairs, transcripts = games.pairs, games.transcripts
    with pytest.raises(ValueError, match="1 pairs for 2 transcripts"):
        write_transcripts(tmp_path, pairs[:1], transcripts, title="x")
