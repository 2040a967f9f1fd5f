"""``g(W h + b)`` reproduces each architecture's own logits (fp32, tiny random-init models).

``h`` is captured the way the decoder captures it: a forward hook on
``model.get_output_embeddings()`` recording its input.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from harness.stability.head import HeadMismatch, HeadSpec, UnsupportedHead, check_head, head_from_model, post_map_from_config

V = 101
SMALL = dict(vocab_size=V, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _configs():
    out = [
        ("llama", lambda: transformers.LlamaConfig(**SMALL)),
        ("qwen2", lambda: transformers.Qwen2Config(**SMALL)),
        ("qwen3", lambda: transformers.Qwen3Config(**SMALL, head_dim=12)),
        ("gpt2", lambda: transformers.GPT2Config(vocab_size=V, n_embd=48, n_layer=2, n_head=4, n_positions=64)),
        ("gpt-neox", lambda: transformers.GPTNeoXConfig(vocab_size=V, hidden_size=48, intermediate_size=96,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        max_position_embeddings=64)),
        ("gemma2-softcap", lambda: transformers.Gemma2Config(**SMALL, head_dim=12, final_logit_softcapping=4.0)),
        ("granite-scale", lambda: transformers.GraniteConfig(**SMALL, logits_scaling=8.0)),
        ("cohere-scale", lambda: transformers.CohereConfig(**SMALL, logit_scale=0.125)),
    ]
    if hasattr(transformers, "GPTJConfig"):
        out.append(("gptj-bias", lambda: transformers.GPTJConfig(vocab_size=V, n_embd=48, n_layer=2, n_head=4,
                                                                  rotary_dim=8, n_positions=64)))
    return out


def _build(make):
    torch.manual_seed(0)
    cfg = make()
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    head = model.get_output_embeddings()
    with torch.no_grad():
        # Random init gives logits of ~0.01, where a softcap or a scale is invisible: make them O(10).
        head.weight.mul_(60.0 / max(float(head.weight.norm(dim=1).mean()), 1e-6))
        if getattr(head, "bias", None) is not None:
            head.bias.copy_(torch.randn(head.bias.shape) * 3.0)
    return model


def _capture(model, n_tokens: int = 9):
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        ids = torch.randint(3, V, (2, n_tokens), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        hook.remove()
    return seen[-1].reshape(-1, seen[-1].shape[-1]), logits.reshape(-1, logits.shape[-1])


@pytest.mark.parametrize("name,make", _configs(), ids=[n for n, _ in _configs()])
def test_head_reproduces_the_models_logits(name, make):
    model = _build(make)
    h, logits = _capture(model)
    head = head_from_model(model)
    assert head.weight.shape == (V, h.shape[1]) and head.dtype == torch.float32
    result = check_head(model, h, logits)
    assert result.ok and result.max_rel_err < 1e-3, result
    assert logits.abs().max() > 1.0  # the check is not vacuous
    expected_post = {"gemma2-softcap": "softcap", "granite-scale": "scale", "cohere-scale": "scale"}.get(name, "none")
    assert head.post == expected_post
    if expected_post != "none":
        # the map matters: the raw linear logits would fail the check
        raw = head.linear_logits(h.float())
        assert float(((raw - logits).abs().amax(1) / logits.abs().amax(1)).max()) > 1e-2
    if name == "gptj-bias":
        assert head.bias is not None and head.bias.abs().max() > 0
    else:
        assert head.bias is None


def test_post_map_values_follow_the_config():
    assert post_map_from_config(transformers.Gemma2Config(**SMALL, head_dim=12, final_logit_softcapping=30.0))[:2] == ("softcap", 30.0)
    assert post_map_from_config(transformers.GraniteConfig(**SMALL, logits_scaling=8.0))[:2] == ("scale", 8.0)
    assert post_map_from_config(transformers.CohereConfig(**SMALL, logit_scale=0.25))[:2] == ("scale", 4.0)
    assert post_map_from_config(transformers.LlamaConfig(**SMALL))[:2] == ("none", None)


def test_a_wrong_map_is_caught():
    model = _build(lambda: transformers.Gemma2Config(**SMALL, head_dim=12, final_logit_softcapping=4.0))
    h, logits = _capture(model)
    model.config.final_logit_softcapping = None  # the head now believes there is no cap
    with pytest.raises(HeadMismatch):
        check_head(model, h, logits)
    assert not check_head(model, h, logits, strict=False).ok


def test_unknown_multipliers_are_refused():
    cfg = transformers.LlamaConfig(**SMALL)
    cfg.logits_scaling = 2.0  # Granite's name on a non-Granite model: × or ÷ is unknown
    with pytest.raises(UnsupportedHead):
        post_map_from_config(cfg)
    with pytest.raises(UnsupportedHead):
        HeadSpec(torch.zeros(3, 2), post="softcap", post_value=0.0)
