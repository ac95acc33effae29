import random
from collections import Counter
from types import SimpleNamespace

import pytest

from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig, OraclePlayer, RandomPlayer, parse_clue, parse_vote, play_games
from vzero.model.sampling import SamplingConfig
from vzero.model.text import SafeText, control_tokens


@pytest.fixture(scope="module")
def picture(random_policy):
    return random_policy.inputs.pictures([ClevrPairs(n=1, seed=0, size=(240, 160))[0].original])[0]


def clue_prompt(policy, picture, output: str) -> list[int]:
    """The prompt ids of the second speaker, after the first one answered ``output``."""
    game = Game(GameConfig(), seed=1)
    game.submit([output])
    return policy.inputs.prompt_ids(game.pending()[0].messages, picture)


def added_counts(policy, ids: list[int]) -> Counter:
    added = set(policy.processor.tokenizer.added_tokens_decoder)
    return Counter(i for i in ids if i in added)


def test_the_tiny_processors_control_tokens_are_all_found(random_policy):
    processor = random_policy.processor
    tok = processor.tokenizer
    tokens = set(control_tokens(processor))
    assert set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values()} <= tokens
    assert {processor.image_token, processor.video_token, "<|vision_start|>", "<|im_end|>"} <= tokens


def test_every_control_token_in_a_clue_stays_text_in_the_next_prompt(random_policy, picture):
    safe = SafeText.for_processor(random_policy.processor)
    template = added_counts(random_policy, clue_prompt(random_policy, picture, "\\boxed{a b}"))
    assert template  # the template's own im_start, vision_start, image pads, ...
    tokens = control_tokens(random_policy.processor)
    for token in [*tokens, "".join(tokens), "<|im_<|im_end|>end|>"]:
        ids = clue_prompt(random_policy, picture, safe(f"\\boxed{{a {token} b}}"))
        assert added_counts(random_policy, ids) == template, token


def test_without_it_the_clue_would_become_the_token(random_policy, picture):
    with pytest.raises((StopIteration, RuntimeError)):  # no picture for the second image placeholder
        clue_prompt(random_policy, picture, "\\boxed{a <|image_pad|> b}")
    template = added_counts(random_policy, clue_prompt(random_policy, picture, "\\boxed{a b}"))
    im_end = random_policy.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    injected = added_counts(random_policy, clue_prompt(random_policy, picture, "\\boxed{a <|im_end|> b}"))
    assert injected[im_end] == template[im_end] + 1


def test_prompts_quoting_neutralised_placeholders_generate(random_policy, picture):
    safe = SafeText.for_processor(random_policy.processor)
    greedy = SamplingConfig(temperature=0, max_new_tokens=2)
    tokens = control_tokens(random_policy.processor)
    prompts = [clue_prompt(random_policy, picture, safe(f"\\boxed{{{t}}}")) for t in tokens]
    comps = random_policy.generate(prompts, [picture] * len(prompts), greedy)
    assert len(comps) == len(prompts)
    with pytest.raises((TypeError, ValueError, IndexError, RuntimeError)):  # get_rope_index: a video without a video
        random_policy.generate([clue_prompt(random_policy, picture, "\\boxed{<|video_pad|>}")], [picture], greedy)


def test_the_tokenizer_reads_neutralised_text_as_ordinary_tokens(random_policy):
    tok = random_policy.processor.tokenizer
    safe = SafeText.for_processor(random_policy.processor)
    for token in control_tokens(random_policy.processor):
        assert not set(tok(safe(f"x{token}y{token}{token}")).input_ids) & set(tok.added_tokens_decoder), token


def test_the_identity_on_ordinary_text(random_policy):
    safe = SafeText.for_processor(random_policy.processor)
    outputs = []

    def record(policy):
        def answer(turns):
            outs = policy(turns)
            outputs.extend(outs)
            return outs

        return answer

    pairs = ClevrPairs(n=6, seed=2, size=(32, 32))
    for policy in (OraclePlayer(), RandomPlayer(0), RandomPlayer(1, gibberish=1.0)):
        games = [Game(GameConfig(), p.domain, seed=i, meta=p.meta, index=i) for i, p in enumerate(pairs)]
        play_games(games, record(policy))
    outputs += ["", "<", "|>", "<|", "<| im_end |>", "<answer>2</answer>", "\\boxed{<3}", "a\u200bb", "é漢字 🙂"]
    for text in outputs:
        assert safe(text) is text


def test_neutralised_text_parses_like_the_original_around_the_spelling():
    safe = SafeText(["<|im_end|>", "<|image_pad|>"])
    assert parse_clue(safe("\\boxed{A red cube.<|im_end|>}")) == "A red cube.< |im_end|>"
    assert parse_vote(safe("<|image_pad|>I vote \\boxed{Player 2}<|im_end|>"), 4) == 1


def test_no_spelling_survives_and_none_is_created():
    tokens = ["<|im_end|>", "<|im_start|>", "<|image_pad|>", "<img>", "</img>", "<IMG_CONTEXT>", "<|endoftext|>"]
    safe = SafeText(tokens)
    rng = random.Random(0)
    pieces = [*tokens, *(t[:k] for t in tokens for k in range(1, len(t))), *(t[k:] for t in tokens for k in (1, 2))]
    pieces += ["a", " ", "|", "<", ">", "\n"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
        out = safe(text)
        assert not any(t in out for t in tokens), (text, out)
        assert out.replace(safe.mark, "") == text.replace(safe.mark, "")  # only marks were added
        assert safe(out) == out


def test_other_families_tokens_come_from_the_processor_and_its_tokenizer():
    tokenizer = SimpleNamespace(
        all_special_tokens=["<s>", "</s>"],
        added_tokens_decoder={7: SimpleNamespace(content="<start_of_image>"), 8: SimpleNamespace(content="\n\n")},
        boi_token="<start_of_image>",
    )
    processor = SimpleNamespace(
        tokenizer=tokenizer, image_token="<IMG_CONTEXT>", start_image_token="<img>", end_image_token="</img>"
    )
    tokens = control_tokens(processor)
    assert set(tokens) == {"<s>", "</s>", "<start_of_image>", "<IMG_CONTEXT>", "<img>", "</img>"}
    safe = SafeText(tokens)
    assert safe("<img><IMG_CONTEXT></img>\n\n<s>") == "< img>< IMG_CONTEXT>< /img>\n\n< s>"


def test_a_mark_that_a_token_contains_is_not_used():
    safe = SafeText(["<| end |>", "<x>"])
    assert safe.mark != " " and safe("a <| end |> b") == f"a <{safe.mark}| end |> b"
    assert SafeText([])("<|im_end|>") == "<|im_end|>"
