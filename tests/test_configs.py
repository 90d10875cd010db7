"""HF config.json reading, family by family: each family's published config read to its real shape, checked
against what transformers itself builds from the same fields; unknown families and bad fields refused."""

from __future__ import annotations

import json

import pytest

from bmc_model import BMCError, spec_from_config
from bmc_model.core.configs import KNOWN
from bmc_model.core.specs import spec_from_config_dict

GEMMA3_270M = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "head_dim": 256, "hidden_size": 640,
    "intermediate_size": 2048, "max_position_embeddings": 32768, "num_attention_heads": 4, "num_hidden_layers": 18,
    "num_key_value_heads": 1, "query_pre_attn_scalar": 256, "sliding_window": 512, "vocab_size": 262144,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3, "torch_dtype": "bfloat16"}
# google/gemma-3-4b-it: its text_config holds only what differs from Gemma3TextConfig's defaults
GEMMA3_4B_MULTIMODAL = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model", "num_hidden_layers": 27}}

# (published config fields, (layers, heads, kv_heads, head_dim, hidden, ffn, vocab, gated, tied, window,
#  sliding layers, max_context))
FAMILIES = {
    "llama-2-7b": ({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                    "max_position_embeddings": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
                    "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False},
                   (32, 32, 32, 128, 4096, 11008, 32000, True, False, None, 0, 4096)),
    "mistral-7b-v0.1": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                         "max_position_embeddings": 32768, "num_attention_heads": 32, "num_hidden_layers": 32,
                         "num_key_value_heads": 8, "sliding_window": 4096, "tie_word_embeddings": False,
                         "vocab_size": 32000},
                        (32, 32, 8, 128, 4096, 14336, 32000, True, False, 4096, 32, 32768)),
    "mistral-7b-v0.3": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                         "max_position_embeddings": 32768, "num_attention_heads": 32, "num_hidden_layers": 32,
                         "num_key_value_heads": 8, "sliding_window": None, "head_dim": 128, "vocab_size": 32768},
                        (32, 32, 8, 128, 4096, 14336, 32768, True, False, None, 0, 32768)),
    "qwen2.5-0.5b": ({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                      "max_position_embeddings": 32768, "max_window_layers": 21, "num_attention_heads": 14,
                      "num_hidden_layers": 24, "num_key_value_heads": 2, "sliding_window": 32768,
                      "tie_word_embeddings": True, "use_sliding_window": False, "vocab_size": 151936},
                     (24, 14, 2, 64, 896, 4864, 151936, True, True, None, 0, 32768)),
    "qwen2-sliding": ({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                       "max_position_embeddings": 32768, "max_window_layers": 21, "num_attention_heads": 14,
                       "num_hidden_layers": 24, "num_key_value_heads": 2, "sliding_window": 4096,
                       "use_sliding_window": True, "vocab_size": 151936},
                      (24, 14, 2, 64, 896, 4864, 151936, True, False, 4096, 3, 32768)),
    "qwen3-0.6b": ({"model_type": "qwen3", "hidden_size": 1024, "head_dim": 128, "intermediate_size": 3072,
                    "max_position_embeddings": 40960, "max_window_layers": 28, "num_attention_heads": 16,
                    "num_hidden_layers": 28, "num_key_value_heads": 8, "sliding_window": None,
                    "tie_word_embeddings": True, "use_sliding_window": False, "vocab_size": 151936},
                   (28, 16, 8, 128, 1024, 3072, 151936, True, True, None, 0, 40960)),
    "gemma-3-270m": (GEMMA3_270M, (18, 4, 1, 256, 640, 2048, 262144, True, True, 512, 15, 32768)),
    "gemma-3-4b-it": (GEMMA3_4B_MULTIMODAL, (34, 8, 4, 256, 2560, 10240, 262208, True, True, 1024, 29, 131072)),
    "phi-3-mini-4k": ({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
                       "max_position_embeddings": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
                       "num_key_value_heads": 32, "original_max_position_embeddings": 4096, "sliding_window": 2047,
                       "tie_word_embeddings": False, "vocab_size": 32064},
                      (32, 32, 32, 96, 3072, 8192, 32064, True, False, 2047, 32, 4096)),
    "falcon-7b": ({"model_type": "falcon", "alibi": False, "hidden_size": 4544, "multi_query": True,
                   "new_decoder_architecture": False, "num_attention_heads": 71, "num_hidden_layers": 32,
                   "parallel_attn": True, "vocab_size": 65024},
                  (32, 71, 1, 64, 4544, 18176, 65024, False, True, None, 0, None)),
    "falcon-40b": ({"model_type": "falcon", "alibi": False, "hidden_size": 8192, "new_decoder_architecture": True,
                    "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8, "parallel_attn": True,
                    "vocab_size": 65024},
                   (60, 128, 8, 64, 8192, 32768, 65024, False, True, None, 0, None)),
    "opt-6.7b": ({"model_type": "opt", "hidden_size": 4096, "ffn_dim": 16384, "max_position_embeddings": 2048,
                  "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 50272,
                  "word_embed_proj_dim": 4096, "do_layer_norm_before": True},
                 (32, 32, 32, 128, 4096, 16384, 50272, False, True, None, 0, 2048)),
    "gpt2": ({"model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
              "vocab_size": 50257},
             (12, 12, 12, 64, 768, 3072, 50257, False, True, None, 0, 1024)),
}


def shape(spec) -> tuple:
    return (spec.layers, spec.heads, spec.kv_heads, spec.head_dim, spec.hidden, spec.ffn, spec.vocab, spec.gated_mlp,
            spec.tied_embeddings, spec.sliding_window, spec.sliding_count, spec.max_context)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_published_configs_read_to_their_real_shape(name, tmp_path):
    cfg, expect = FAMILIES[name]
    assert shape(spec_from_config_dict(cfg, name=name)) == expect
    p = tmp_path / name / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(cfg))
    assert spec_from_config(p) == spec_from_config_dict(cfg, name=name)  # the file reader is the same


def test_every_known_family_is_tested():
    types = {cfg["model_type"] for cfg, _ in FAMILIES.values()} | {"gemma3_text"}
    assert set(KNOWN) == types


def test_old_gemma3_configs_give_the_pattern_instead_of_layer_types():
    cfg = {k: v for k, v in GEMMA3_270M.items() if k != "layer_types"}
    assert spec_from_config_dict({**cfg, "sliding_window_pattern": 6}).sliding_count == 15
    assert spec_from_config_dict({**cfg, "sliding_window_pattern": 2}).sliding_count == 9
    assert spec_from_config_dict(cfg).sliding_count == 15  # transformers' default pattern: 6


@pytest.mark.parametrize("cfg,match", [
    ({"model_type": "mamba2", "hidden_size": 512, "num_hidden_layers": 4}, "model_type 'mamba2' is not supported"),
    ({"model_type": "mixtral", "hidden_size": 512}, r"not supported \(known: falcon, gemma3, gemma3_text"),
    ({"model_type": 7}, "model_type must be a string"),
    ({**FAMILIES["llama-2-7b"][0], "head_dim": 0}, "'head_dim' must be a positive integer, got 0"),
    ({**FAMILIES["llama-2-7b"][0], "head_dim": -64}, "'head_dim' must be a positive integer"),
    ({**FAMILIES["llama-2-7b"][0], "hidden_size": 4000, "num_attention_heads": 48}, "not a multiple of 48 heads"),
    ({**FAMILIES["mistral-7b-v0.1"][0], "sliding_window": 0}, "'sliding_window' must be a positive integer"),
    ({**FAMILIES["mistral-7b-v0.1"][0], "sliding_window": True}, "'sliding_window' must be a positive integer"),
    ({**FAMILIES["falcon-7b"][0], "multi_query": "yes"}, "'multi_query' must be true or false"),
    ({**GEMMA3_270M, "layer_types": ["sliding_attention"] * 17}, "one type for each of the 18 layers"),
    ({**GEMMA3_270M, "layer_types": ["linear_attention"] * 18}, "'linear_attention' is not supported"),
    ({"model_type": "gemma3"}, "needs a text_config"),
    ({**FAMILIES["gpt2"][0], "n_head": "12"}, "'n_head' must be a positive integer"),
    ({"model_type": "opt", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "vocab_size": 9},
     "missing field 'ffn_dim'"),
])
def test_unknown_families_and_bad_fields_are_refused_by_name(cfg, match):
    with pytest.raises(BMCError, match=match):
        spec_from_config_dict(cfg, name="cfg")


def test_config_without_model_type_reads_llama_names():
    cfg = {k: v for k, v in FAMILIES["llama-2-7b"][0].items() if k != "model_type"}
    assert shape(spec_from_config_dict(cfg)) == FAMILIES["llama-2-7b"][1]
    with pytest.raises(BMCError, match="intermediate_size"):
        spec_from_config_dict({k: v for k, v in cfg.items() if k != "intermediate_size"})


# Tiny configs of each family, built by transformers: the KV cache it fills and the weights it holds must be
# what the ModelSpec read from the same fields says.
TINY = {
    "llama": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 2, "vocab_size": 50},
    "mistral": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
                "num_hidden_layers": 2, "vocab_size": 50, "sliding_window": 5},
    "qwen2": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 1,
              "num_hidden_layers": 3, "vocab_size": 50, "use_sliding_window": True, "sliding_window": 5,
              "max_window_layers": 1},
    "qwen3": {"hidden_size": 64, "head_dim": 24, "intermediate_size": 96, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 50},
    "gemma3_text": {"hidden_size": 64, "head_dim": 32, "intermediate_size": 96, "num_attention_heads": 4,
                    "num_key_value_heads": 1, "num_hidden_layers": 7, "vocab_size": 50, "sliding_window": 5},
    "phi3": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_hidden_layers": 2, "vocab_size": 50, "sliding_window": 5, "pad_token_id": 0},
    "falcon": {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 50,
               "multi_query": True, "new_decoder_architecture": False},
    "opt": {"hidden_size": 64, "ffn_dim": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 50,
            "word_embed_proj_dim": 64},
    "gpt2": {"n_embd": 64, "n_head": 4, "n_layer": 2, "vocab_size": 50, "n_positions": 64},
}


@pytest.mark.parametrize("mtype", sorted(TINY))
def test_spec_matches_what_transformers_builds(mtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = transformers.AutoConfig.for_model(mtype, **TINY[mtype])
    spec = spec_from_config_dict(config.to_dict(), name=mtype)
    # which layers slide, and their window, as transformers' own DynamicCache lays them out
    types, kwargs = get_layer_types_and_kwargs(config)
    assert spec.sliding_count == types.count("sliding_attention")
    assert {kw.get("sliding_window") for kw in kwargs if kw} <= {spec.sliding_window}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    cache = transformers.DynamicCache(config=config)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache, use_cache=True)
    for layer in cache.layers:
        assert tuple(layer.keys.shape) == (1, spec.kv_heads, 3, spec.head_dim)
    # the decoder layers' matrices (1-D norms and biases aside) hold layer_params() weights each
    blocks = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))
    assert len(blocks) == spec.layers
    for block in blocks:
        assert sum(p.numel() for p in block.parameters() if p.dim() == 2) == spec.layer_params()
    assert model.get_input_embeddings().weight.numel() == spec.vocab * spec.hidden
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == spec.tied_embeddings


def test_falcon_new_decoder_architecture_kv_heads():
    """Falcon-40B's layout: num_kv_heads K/V heads in the fused projection (transformers then broadcasts them to
    every query head before caching, which the spec does not follow: it prices the model's own KV heads)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.FalconConfig(hidden_size=64, num_attention_heads=8, num_kv_heads=2, num_hidden_layers=2,
                                       vocab_size=50, new_decoder_architecture=True)
    spec = spec_from_config_dict(config.to_dict())
    assert spec.kv_heads == 2
    model = transformers.AutoModelForCausalLM.from_config(config)
    block = model.transformer.h[0]
    assert sum(p.numel() for p in block.parameters() if p.dim() == 2) == spec.layer_params()


def test_gemma3_text_defaults_are_transformers_own():
    transformers = pytest.importorskip("transformers")
    from bmc_model.core.configs import GEMMA3_TEXT_DEFAULTS

    d = transformers.Gemma3TextConfig().to_dict()
    assert {k: d[k] for k in GEMMA3_TEXT_DEFAULTS} == GEMMA3_TEXT_DEFAULTS
    assert d["layer_types"].count("sliding_attention") == 26 - 26 // 6  # the pattern of 6 the reader applies
