"""HF ``generate`` samples from the distribution vzero scores, whatever the model's own ``generation_config`` holds."""

import logging

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList, WatermarkingConfig
from transformers.generation import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MinNewTokensLengthLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

import vzero.model.decode as decode
from vzero.model import DecodingConfig, Policy, load_vlm
from vzero.model.sampling import (
    KEPT_GENERATION,
    NEUTRAL_GENERATION,
    VZERO_GENERATION,
    KeyedSampler,
    SamplingConfig,
)

from .test_policy import prompts_and_pictures

# Settings of the model's generation_config that would change generate's tokens, each away from its no-op value.
ACTIVE = {
    "do_sample": True,
    "temperature": 0.5,
    "top_k": 3,
    "top_p": 0.5,
    "min_p": 0.1,
    "top_h": 0.5,
    "typical_p": 0.5,
    "epsilon_cutoff": 1e-3,
    "eta_cutoff": 1e-3,
    "repetition_penalty": 1.3,
    "no_repeat_ngram_size": 2,
    "bad_words_ids": [[5]],
    "sequence_bias": {(5,): -1.0},
    "min_length": 3,
    "forced_bos_token_id": 1,
    "forced_eos_token_id": 2,
    "exponential_decay_length_penalty": (2, 1.1),
    "begin_suppress_tokens": [5],
    "guidance_scale": 1.5,
    "remove_invalid_values": True,
    "renormalize_logits": True,
    "watermarking_config": WatermarkingConfig(),
    "max_time": 5.0,
    "is_assistant": True,
    "assistant_confidence_threshold": 0.4,
}
# What the brief names, and what transformers 5.25 builds a logits processor or a warper for: all neutralised.
NAMED = (
    *("repetition_penalty", "no_repeat_ngram_size", "top_k", "top_p", "min_p", "top_h", "typical_p", "temperature"),
    *("bad_words_ids", "begin_suppress_tokens", "min_length", "encoder_repetition_penalty"),
    *("encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "forced_bos_token_id"),
    *("forced_eos_token_id", "sequence_bias", "epsilon_cutoff", "eta_cutoff", "renormalize_logits"),
    *("guidance_scale", "watermarking_config", "remove_invalid_values", "do_sample", "num_beams", "stop_strings"),
)


@pytest.fixture(scope="module")
def tiny(tiny_path):
    model, processor = load_vlm(tiny_path)
    return model.eval(), processor


@pytest.fixture()
def own_config(tiny, monkeypatch):
    """``own_config(**settings)``: set fields of the tiny model's generation_config, undone after the test."""
    config = tiny[0].get_base_model().generation_config

    def put(**settings):
        for key, value in settings.items():
            monkeypatch.setattr(config, key, value, raising=False)
        return config

    return put


def test_every_field_of_the_installed_generation_config_is_neutralised_set_or_kept():
    """A field a newer transformers adds fails here until it is listed (and, at run time, is refused if set)."""
    fields = {k for k in vars(GenerationConfig()) if not k.startswith("_")}
    lists = [set(NEUTRAL_GENERATION), set(VZERO_GENERATION), set(KEPT_GENERATION)]
    assert set.union(*lists) == fields
    assert sum(map(len, lists)) == len(fields)  # no field in two lists
    assert set(NAMED) <= set(NEUTRAL_GENERATION)
    assert decode._unlisted_generation_fields() == frozenset()


def test_generate_builds_no_processor_from_the_models_config(tiny, own_config):
    """With the model's config holding every active setting above, generate (as the decoder calls it) runs greedy
    search with only vzero's processors (suppressed ids, EOS held back) and stops only at EOS or the budget; without
    the neutralisation the same config builds a processor or a stop for each setting."""
    model, processor = tiny
    base = model.get_base_model()
    policy = Policy(model, processor, decoding=DecodingConfig(decoder="generate"))
    inputs = policy.inputs.pack(*prompts_and_pictures(policy, 2))
    own = own_config(**ACTIVE)
    config = policy.decode.generation_config(own, SamplingConfig(max_new_tokens=8, min_new_tokens=2))

    def built(generation_config):
        settings, _ = base._prepare_generation_config(generation_config)
        base._prepare_special_tokens(settings, True, device=inputs.input_ids.device)
        procs = base._get_logits_processor(
            settings,
            input_ids_seq_length=inputs.input_ids.shape[1],
            logits_processor=LogitsProcessorList(),
            device=inputs.input_ids.device,
            model_kwargs={"attention_mask": inputs.attention_mask},
        )
        stops = base._get_stopping_criteria(settings, StoppingCriteriaList())
        return settings, {type(p) for p in procs}, {type(s) for s in stops}

    with decode._in_place_of(base, config):
        settings, procs, stops = built(config)
    assert settings.get_generation_mode() == "greedy_search" and settings.num_return_sequences == 1
    assert procs == {MinNewTokensLengthLogitsProcessor, SuppressTokensLogitsProcessor}
    assert stops == {MaxLengthCriteria, EosTokenCriteria}
    assert settings.eos_token_id == sorted(policy.ids.eos) and settings.pad_token_id == policy.ids.pad
    assert settings.suppress_tokens == policy.ids.suppress and settings.max_new_tokens == 8
    _, procs, stops = built(GenerationConfig(max_new_tokens=8))  # main's way: the model's settings fill the rest
    assert len(procs) == 21 and len(stops) == 4  # each setting of ACTIVE built its own processor or stop
    assert own.repetition_penalty == 1.3 and base.generation_config is own  # the model's config is left as it was


@pytest.mark.parametrize(
    "settings",
    [{"repetition_penalty": 50.0}, {"no_repeat_ngram_size": 2}, {"do_sample": True, "top_k": 1, "top_p": 0.001}],
    ids=["repetition_penalty", "no_repeat_ngram", "qwen_like"],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_generate_samples_vzeros_rows_whatever_the_models_config(tiny, own_config, settings, temperature):
    """The same rows from HF generate and vzero's decoder (the same keys), while main's call, which left the model's
    config to generate, gives other rows for every one under a penalty or n-gram ban."""
    model, processor = tiny
    fast, slow = Policy(model, processor), Policy(model, processor, decoding=DecodingConfig(decoder="generate"))
    prompts, pics = prompts_and_pictures(fast, 6)
    sampling, keys = SamplingConfig(temperature=temperature, max_new_tokens=20), list(range(6))
    expected = [c.ids for c in fast.generate(prompts, pics, sampling, keys)]
    own_config(**settings)
    assert [c.ids for c in slow.generate(prompts, pics, sampling, keys)] == expected
    assert any(len(ids) < 20 for ids in expected)  # rows stop at their EOS, as scoring keeps them
    inputs = fast.inputs.pack(prompts, pics)
    noise = [KeyedSampler(torch.tensor(keys), temperature)] if temperature else []
    main = model.generate(  # main's call: only vzero's arguments, the model's config for the rest
        **inputs.model_kwargs(),
        do_sample=False,
        max_new_tokens=20,
        logits_processor=LogitsProcessorList(noise),
        eos_token_id=sorted(fast.ids.eos),
        pad_token_id=fast.ids.pad,
        suppress_tokens=fast.ids.suppress,
    )[:, inputs.input_ids.shape[1] :]
    theirs = [fast._completion(row, 0, sampling).ids for row in main.tolist()]
    if "do_sample" not in settings:  # do_sample and the warpers were inert in main's call too
        assert all(a != b for a, b in zip(theirs, expected))


def test_the_models_settings_are_logged_once_and_unknown_ones_refused(tiny, own_config, caplog, monkeypatch):
    model, processor = tiny
    policy = Policy(model, processor, decoding=DecodingConfig(decoder="generate"))
    own = own_config(repetition_penalty=1.05, top_k=1, top_p=0.001, temperature=0.1, do_sample=True)
    sampling = SamplingConfig(max_new_tokens=4)
    with caplog.at_level(logging.WARNING, logger="vzero.model.decode"):
        for _ in range(2):
            config = policy.decode.generation_config(own, sampling)
    lines = [r.getMessage() for r in caplog.records if r.name == "vzero.model.decode"]
    assert lines == [
        "model.decoding.decoder='generate' neutralises the model's generation_config do_sample=True, "
        "repetition_penalty=1.05, temperature=0.1, top_k=1, top_p=0.001: only vzero's sampling settings decide the "
        "draws, as only they are scored"
    ]
    assert (config.repetition_penalty, config.do_sample, config.top_k) == (1.0, False, None)
    assert own.repetition_penalty == 1.05  # the model's own config is untouched
    # A field a later transformers might add, which vzero has not listed: refused when the model sets it.
    monkeypatch.setattr(decode, "_unlisted_generation_fields", lambda: frozenset({"novel_penalty"}))
    own_config(novel_penalty=2.0)
    with pytest.raises(ValueError, match="generation_config sets novel_penalty=2.0, which vzero does not know how"):
        policy.decode.generation_config(own, sampling)
