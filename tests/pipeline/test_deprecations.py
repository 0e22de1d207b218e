"""The suite's warning filters (pyproject.toml) make a deprecation from transformers or PEFT an
error, both kinds: the ones the libraries raise in their own frames and transformers'
`deprecate_kwarg`, raised from the caller's frame. The current APIs sekbench uses are quiet.
A tiny random Llama stands in for the model: no weights to load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def make_tiny():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2, max_position_embeddings=32))


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def test_a_deprecated_transformers_api_fails_a_test(tiny):
    with pytest.raises(FutureWarning, match="is_gradient_checkpointing"):
        tiny.is_gradient_checkpointing
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(FutureWarning, match="past_key_values"):
        tiny(input_ids=ids, past_key_values=None, use_cache=False)


def test_the_current_apis_are_quiet(tiny, recwarn):
    from transformers import DynamicCache
    assert tiny.is_activation_checkpointing is False
    ids = torch.tensor([[1, 2, 3]])
    cache = DynamicCache(config=tiny.config)
    out = tiny(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    assert out.logits.shape[1] == 1
    # the selective loss's boolean mask (pipeline/sft_trainer.py's forward_loss)
    mask = torch.tensor([[True, False, True]])
    assert tiny(input_ids=ids, logits_to_keep=mask, use_cache=False).logits.shape[0] == 2
    assert not [w for w in recwarn if issubclass(w.category, (DeprecationWarning, FutureWarning))]


def test_peft_wraps_a_model_quietly_only_through_sekbench():
    """PEFT 0.21 reads transformers' deprecated `is_gradient_checkpointing` while it wraps a
    model (no newer PEFT exists); sekbench wraps through peft_quiet, which hushes that one
    warning and nothing else."""
    pytest.importorskip("peft")
    import warnings

    from peft import LoraConfig, get_peft_model

    from pipeline.sft import peft_quiet
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    with pytest.raises(FutureWarning, match="is_gradient_checkpointing"):
        get_peft_model(make_tiny(), lora)
    with peft_quiet():
        model = get_peft_model(make_tiny(), lora, adapter_name="quiet")
        with pytest.raises(FutureWarning, match="other"):
            warnings.warn("`other` is deprecated and will be removed in version 9 for `A.b`.",
                          FutureWarning)
    assert "quiet" in model.peft_config
