"""Game transcripts a researcher can read: one self-contained HTML page and one JSONL file of the same turns.

The page shows, per game, the pictures (inline, as PNG data), each player's seat, role, picture and side (the trained
policy or the frozen reference), the clues round by round, the votes, each turn's reward and advantage, who won, and
every turn's full text (its reasoning) under a fold. It needs no network and no other file, so MLflow's artifact viewer
and any browser open it as it is. Model text is untrusted: every string is HTML-escaped, so a completion can never
become markup.

The JSONL file has one object per turn (see :func:`turn_rows`), in play order.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vzero.data.pairs.base import ImagePair, blank_like
from vzero.game import OBSERVER, Stage
from vzero.rollout.engine import RolloutTranscript

HTML_NAME, JSONL_NAME = "transcripts.html", "transcripts.jsonl"
THUMBNAIL = 320
"""Longest side, in pixels, of the pictures embedded in the page."""


def turn_rows(
    transcripts: Sequence[RolloutTranscript], advantages: Sequence[Sequence[float]] | None = None
) -> list[dict]:
    """One plain dict per turn: game, seed, stage, round, player, role, sample, side, the prompt's and completion's
    lengths in tokens, the completion text, the parsed clue or vote, truncation, reward and advantage (None when the
    turns did not train: evaluation and play), and the game's winner.

    Args:
        advantages: per game, one advantage per turn in play order (a training batch's), or None.
    """
    rows = []
    for g, t in enumerate(transcripts):
        vote = 0
        for k, s in enumerate(t.samples):
            turn = s.turn
            if turn.stage == Stage.CLUE:
                reward, parsed = t.clue_rewards[turn.player], t.clues[turn.round][turn.player]
            else:
                reward, parsed = t.decision_rewards[vote], t.votes[vote]
                vote += 1
            rows.append(
                {
                    "game": g,
                    "seed": t.seed,
                    "domain": t.domain,
                    "spy": t.spy,
                    "stage": str(turn.stage),
                    "round": turn.round,
                    "player": turn.player,
                    "role": turn.role,
                    "sample": turn.sample,
                    "view": turn.view,
                    "side": s.side,
                    "prompt_len": len(s.prompt_ids),
                    "completion_len": len(s.completion_ids),
                    "completion": s.text,
                    "parsed": parsed,
                    "truncated": s.truncated,
                    "reward": reward,
                    "advantage": None if advantages is None else float(advantages[g][k]),
                    "winner": t.winner,
                }
            )
    return rows


def write_transcripts(
    out: str | Path,
    pairs: Sequence[ImagePair],
    transcripts: Sequence[RolloutTranscript],
    title: str,
    advantages: Sequence[Sequence[float]] | None = None,
) -> tuple[Path, Path]:
    """Write ``transcripts.html`` and ``transcripts.jsonl`` into the folder ``out`` (created); returns their paths.

    Args:
        pairs: each game's pictures, aligned with ``transcripts``.
        title: the page's heading, e.g. ``evaluation at step 200``.
        advantages: as in :func:`turn_rows`.
    """
    if len(pairs) != len(transcripts):
        raise ValueError(f"got {len(pairs)} pairs for {len(transcripts)} transcripts")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = turn_rows(transcripts, advantages)
    jsonl = out / JSONL_NAME
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    page = out / HTML_NAME
    games = [_game(g, p, t, [r for r in rows if r["game"] == g]) for g, (p, t) in enumerate(zip(pairs, transcripts))]
    page.write_text(_PAGE.format(title=_e(title), summary=_e(_summary(transcripts)), games="".join(games)), "utf-8")
    return page, jsonl


def write_suite_transcripts(out: str | Path, title: str, rows: Sequence[dict]) -> tuple[Path, Path]:
    """Write ``suite.html`` (each question's pictures, text, reference answer and the model's answer) and
    ``suite.jsonl`` (the same without pictures) into ``out``; each row holds ``images`` (PIL), ``question``,
    ``answer``, ``response``, ``correct``, ``parsed``, ``kind`` and ``index``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "suite.jsonl"
    plain = [{k: v for k, v in r.items() if k != "images"} for r in rows]
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in plain), encoding="utf-8")
    items = []
    for r in rows:
        pictures = "".join(f'<figure><img src="{_data_uri(im)}" alt="picture"></figure>' for im in r["images"])
        verdict = "right" if r["correct"] else "wrong" if r["parsed"] else "unparseable"
        items.append(
            f"<section class=game><h2>Question {r['index'] + 1} <small>{_e(r['kind'])}</small> "
            f'<span class="winner {"civ" if r["correct"] else "spy"}">{verdict}</span></h2>'
            f"<div class=pictures>{pictures}</div><p>{_e(r['question'])}</p>"
            f"<table><tr><th>answer</th><td class=clue>{_e(r['answer'])}</td></tr>"
            f"<tr><th>model</th><td><pre>{_e(r['response'])}</pre></td></tr></table></section>"
        )
    right = sum(bool(r["correct"]) for r in rows)
    summary = f"{len(rows)} questions shown: {right} answered right"
    page = out / "suite.html"
    page.write_text(_PAGE.format(title=_e(title), summary=_e(summary), games="".join(items)), "utf-8")
    return page, jsonl


def _summary(transcripts: Sequence[RolloutTranscript]) -> str:
    n = len(transcripts)
    civ = sum(t.civilians_win for t in transcripts)
    return f"{n} games: the civilians found the spy in {civ}, the spy escaped in {n - civ}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(image: Image.Image) -> str:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _player(p: int) -> str:
    return "observer" if p == OBSERVER else f"P{p + 1}"


def _vote(parsed: object) -> str:
    return _player(parsed) if isinstance(parsed, int) else str(parsed)


def _number(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:+.3f}" if abs(x) >= 5e-4 else "0.000"  # never "-0.000"


def _text(row: dict) -> str:
    cut = " <span class=cut>cut off</span>" if row["truncated"] else ""
    return (
        f"<details><summary>{row['completion_len']} tokens{cut}</summary><pre>{_e(row['completion'])}</pre></details>"
    )


def _game(g: int, pair: ImagePair, t: RolloutTranscript, rows: list[dict]) -> str:
    spy_view = t.views[t.spy]
    spy_picture = pair.modified if spy_view == "modified" and pair.modified is not None else blank_like(pair.original)
    sides = {r["player"]: r["side"] for r in rows}
    players = "".join(
        f"<tr class={'spy' if p == t.spy else 'civ'}><td>{_player(p)}</td>"
        f"<td>{'spy' if p == t.spy else 'civilian'}</td><td>{_e(sides.get(p, ''))}</td><td>{_e(t.views[p])}</td>"
        f"<td>{_number(t.clue_rewards[p])}</td><td>{t.tally[p]}</td></tr>"
        for p in range(t.config.n_players)
    )
    clues = "".join(
        f"<tr><td>{r['round'] + 1}</td><td>{_player(r['player'])}{' (spy)' if r['player'] == t.spy else ''}</td>"
        f"<td class=clue>{_e(r['parsed'] if r['parsed'] is not None else 'unparseable')}</td>"
        f"<td>{_number(r['reward'])}</td><td>{_number(r['advantage'])}</td><td>{_text(r)}</td></tr>"
        for r in rows
        if r["stage"] == "clue"
    )
    votes = "".join(
        f"<tr><td>{_player(r['player'])}</td><td>{r['sample'] + 1}</td>"
        f"<td class={'hit' if r['parsed'] == t.spy else 'miss'}>{_e(_vote(r['parsed']))}</td>"
        f"<td>{_number(r['reward'])}</td><td>{_number(r['advantage'])}</td><td>{_text(r)}</td></tr>"
        for r in rows
        if r["stage"] == "decision"
    )
    winner = "civilians win: the spy was found" if t.civilians_win else "the spy wins: not found"
    return _GAME.format(
        g=g + 1,
        seed=t.seed,
        domain=_e(t.domain),
        spy=_player(t.spy),
        winner_class="civ" if t.civilians_win else "spy",
        winner=winner,
        original=_data_uri(pair.original),
        spy_picture=_data_uri(spy_picture),
        spy_view=_e(spy_view),
        players=players,
        clues=clues,
        votes=votes,
    )


_GAME = """
<section class=game>
<h2>Game {g} <small>seed {seed} · {domain} · spy: {spy}</small> <span class="winner {winner_class}">{winner}</span></h2>
<div class=pictures>
<figure><img src="{original}" alt="original picture"><figcaption>civilians see the original</figcaption></figure>
<figure><img src="{spy_picture}" alt="spy's picture"><figcaption>the spy sees: {spy_view}</figcaption></figure>
</div>
<table><tr><th>player</th><th>role</th><th>played by</th><th>sees</th><th>clue reward</th><th>votes received</th></tr>
{players}</table>
<h3>Clues</h3>
<table><tr><th>round</th><th>player</th><th>clue</th><th>reward</th><th>advantage</th><th>full text</th></tr>
{clues}</table>
<h3>Votes</h3>
<table><tr><th>voter</th><th>sample</th><th>vote</th><th>reward</th><th>advantage</th><th>full text</th></tr>
{votes}</table>
</section>"""

_PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; margin-top: 0; }} h3 {{ font-size: 1em; margin: .8em 0 .3em; }}
small {{ color: #666; font-weight: normal; }}
.game {{ border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1em 0; }}
.pictures {{ display: flex; gap: 1em; }} figure {{ margin: 0; }} figcaption {{ color: #666; font-size: .9em; }}
img {{ border: 1px solid #ddd; max-width: 320px; }}
table {{ border-collapse: collapse; margin: .3em 0; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} tr.spy td {{ background: #fff1f0; }} td.clue {{ font-weight: 600; }}
td.hit {{ color: #137333; font-weight: 600; }} td.miss {{ color: #a50e0e; }}
.winner {{ font-size: .85em; padding: 2px 8px; border-radius: 4px; margin-left: .5em; }}
.winner.civ {{ background: #e6f4ea; }} .winner.spy {{ background: #fce8e6; }}
.cut {{ color: #a50e0e; }} pre {{ white-space: pre-wrap; max-width: 600px; margin: .2em 0; }}
</style></head><body>
<h1>{title}</h1><p>{summary}</p>
{games}
</body></html>
"""
