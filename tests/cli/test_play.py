"""`vzero play`: a checkpoint's games against the frozen reference, written as a page and a JSONL file."""

import json
import sys

from vzero.__main__ import main

from .conftest import TINY, TINY_SETTINGS


def test_play_against_the_reference_writes_transcripts_and_a_summary(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["vzero", "play"])  # as from the shell
    out = tmp_path / "play"
    main(
        [
            "play",
            "--config",
            TINY,
            "--model.vlm.name_or_path",
            "tiny-random",
            "--ckpt_path",
            str(trained_run.ckpt),
            "--games",
            "2",
            "--against",
            "reference",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("win rate vs reference at step 2: ") and "over 2 games" in printed[0]
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    # 2 games x (every player's clue in every round + each civilian's sampled votes)
    game = TINY_SETTINGS["data"]["game"]
    players, votes = game["n_civilians"] + 1, game["n_civilians"] * game.get("votes_per_voter", 1)
    assert len(rows) == 2 * (players * game["clue_rounds"] + votes)
    assert {r["game"] for r in rows} == {0, 1}
    # Game 0: the trained policy plays the civilians against the reference spy; game 1 the other way round.
    for r in rows:
        spy_turn = r["role"] == "spy"
        assert r["side"] == ("reference" if spy_turn == (r["game"] == 0) else "trained"), r
    assert all(r["advantage"] is None for r in rows)  # nothing trains on played games
    page = (out / "transcripts.html").read_text()
    assert page.count("<section class=game>") == 2 and page.count("data:image/png;base64,") == 4
