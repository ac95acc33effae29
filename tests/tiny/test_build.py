import json
import os
import subprocess
import sys
from pathlib import Path

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig
from vzero.tiny import NAMES, cache_dir
from vzero.tiny.build import MAX_PIXELS

LEARN = Path(__file__).resolve().parents[2] / "configs" / "tiny_learn.yaml"


def test_tiny_loads_offline_through_from_pretrained_and_generates(tiny_random_path, tmp_path):
    # A fresh interpreter with the network switched off: the folder loads through the ordinary hub code path.
    code = f"""
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig
path = {str(tiny_random_path)!r}
model = AutoModelForImageTextToText.from_pretrained(path).eval()
processor = AutoProcessor.from_pretrained(path)
assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration", type(model)
assert sum(p.numel() for p in model.parameters()) < 5_000_000
messages = Game(GameConfig(), seed=0).pending()[0].messages
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=[text], images=[ClevrPairs(n=1, size=(240, 160))[0].original], return_tensors="pt")
n_visual = int((inputs["input_ids"] == model.config.image_token_id).sum())
assert 16 <= n_visual <= 64, n_visual
out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
assert out.shape[1] == inputs["input_ids"].shape[1] + 5
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_saved_tiny_reloads_by_path_like_a_hub_checkpoint(tiny_random, tmp_path):
    from vzero.model import load_vlm

    model, processor = tiny_random
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, processor2 = load_vlm(str(tmp_path), lora=None)
    assert processor2.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert a.equal(b), n


def test_cache_layout(tiny_random_path):
    assert Path(tiny_random_path).parent == cache_dir()
    assert set(NAMES) == {"tiny", "tiny-random"}
    config = json.loads((Path(tiny_random_path) / "processor_config.json").read_text())
    assert config["image_processor"]["size"]["longest_edge"] == MAX_PIXELS


def test_tokenizer_keeps_content_words_whole(tiny_random):
    tok = tiny_random[1].tokenizer
    for word in ("red", "cube", "sphere", "metal", "cylinder"):
        assert len(tok(f" {word}", add_special_tokens=False).input_ids) == 1, word
    clue = "I see 5 objects. \\boxed{There is a large red metal cube.}"
    assert tok.decode(tok(clue, add_special_tokens=False).input_ids) == clue


def test_pretrained_tiny_answers_in_format_and_reads_the_clues(tiny_path):
    """The pretrained tiny model answers in the game's formats under greedy decoding, on held-out scenes, and its
    notes read the clues it gave itself; its votes find the spy no better than a vote for a random other player."""
    from vzero.model import Policy, load_vlm
    from vzero.rollout.votes import config_game
    from vzero.tiny.pretrain import REPORT
    from vzero.tiny.report import evaluate, game_name

    report = json.loads((Path(tiny_path) / REPORT).read_text())
    assert report["clue_format_valid"] >= 0.9 and report["vote_format_valid"] >= 0.9
    # ... in every rule set it was shown, the 4-player blank-spy game of configs/tiny_learn.yaml among them
    by_game = report["by_game"]
    assert len(by_game) == 4 and min(g["vote_format_valid"] for g in by_game.values()) >= 0.9
    # It reads the picture: colour beats both chance and the best answer a model blind to the image could give.
    assert report["clue_color_true"] > report["clue_color_blind"] + 0.2
    # It reads the clues of its own games: copies them by number far above chance, and in the game that RL trains on
    # it judges whether they name its own colour well above a coin.
    learn = by_game[game_name(config_game(LEARN)[0])]
    assert learn["notes_copy"] > 0.9 and report["notes_copy"] > report["notes_copy_chance"] + 0.3
    assert learn["notes_judge"] > 0.7
    # Spy-finding is left to RL: the votes (3 in 10 of them taught to follow the notes' verdicts, a text rule that
    # never sees the spy) stay near a random other player's and never name the voter.
    assert abs(learn["vote_spy"] - learn["vote_spy_chance"]) < 0.15 and learn["vote_self"] < 0.05
    model, processor = load_vlm(tiny_path, lora=None)
    pairs = ClevrPairs(n=4, seed=99, size=(240, 160))
    fresh = evaluate(Policy(model.eval(), processor), pairs, range(4), GameConfig())
    assert fresh["clue_format_valid"] >= 0.8 and fresh["vote_format_valid"] >= 0.8


def test_names_resolve_to_folders_and_anything_else_passes_through(tiny_random_path):
    from vzero.tiny import resolve

    assert resolve("tiny-random") == tiny_random_path
    assert resolve("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_the_recipe_fingerprint_follows_the_code_not_the_file_names(monkeypatch):
    import inspect
    from types import ModuleType

    from vzero.tiny import cache

    sources = {"a": "X = 1\n", "moved.a": "X = 1\n", "c": "X = 2\n"}
    monkeypatch.setattr(inspect, "getsource", lambda module: sources[module.__name__])
    fingerprint = {name: cache.recipe_fingerprint((ModuleType(name),)) for name in sources}
    assert fingerprint["a"] == fingerprint["moved.a"] != fingerprint["c"]
