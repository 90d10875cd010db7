import json
import subprocess
import sys

import pytest

from bmc_model import BMCError, get_spec, presets, spec_from_config

# (layers, heads, kv_heads, head_dim, hidden, ffn, vocab) as in each model's own config.json
CONFIG_JSON = {
    "llama-7b": (32, 32, 32, 128, 4096, 11008, 32000),
    "llama-13b": (40, 40, 40, 128, 5120, 13824, 32000),
    "llama-70b": (80, 64, 8, 128, 8192, 28672, 32000),
    "llama3-8b": (32, 32, 8, 128, 4096, 14336, 128256),
    "mistral-7b": (32, 32, 8, 128, 4096, 14336, 32000),
    "opt-6.7b": (32, 32, 32, 128, 4096, 16384, 50272),
    "tinyllama-1.1b": (22, 32, 4, 64, 2048, 5632, 32000),
    "smollm2-135m": (30, 9, 3, 64, 576, 1536, 49152),
    "qwen2.5-coder-0.5b": (24, 14, 2, 64, 896, 4864, 151936),
    "qwen2.5-coder-1.5b": (28, 12, 2, 128, 1536, 8960, 151936),
    "gemma3-270m": (18, 4, 1, 256, 640, 2048, 262144),  # also the GGUF's metadata (gemma3.* keys)
}
# (sliding window, sliding layers) as each config.json says (Gemma-3: layer_types, 5 sliding then 1 full)
WINDOWS = {"mistral-7b": (4096, 32), "gemma3-270m": (512, 15)}


@pytest.mark.parametrize("name", sorted(CONFIG_JSON))
def test_presets_match_config_json(name):
    s = get_spec(name)
    assert (s.layers, s.heads, s.kv_heads, s.head_dim, s.hidden, s.ffn, s.vocab) == CONFIG_JSON[name]


@pytest.mark.parametrize("name", sorted(CONFIG_JSON))
def test_presets_sliding_windows(name):
    s = get_spec(name)
    assert (s.sliding_window, s.sliding_count) == WINDOWS.get(name, (None, 0))


def test_sliding_fields_are_checked_and_old_json_still_loads():
    from bmc_model.core.specs import ModelSpec

    base = get_spec("llama-7b").to_dict()
    base.pop("sliding_layers")  # a spec JSON from before the field: every layer slides when a window is given
    old = ModelSpec(**{**base, "aliases": (), "sliding_window": 4096})
    assert old.sliding_layers is None and old.sliding_count == old.layers
    for field, value, match in [("sliding_layers", 33, "exceeds layers"), ("sliding_layers", -1, "sliding_layers"),
                                ("sliding_window", 0, "sliding_window"), ("sliding_window", True, "sliding_window"),
                                ("max_context", 0, "max_context")]:
        with pytest.raises(BMCError, match=match):
            ModelSpec(**{**base, "aliases": (), "sliding_window": 4096, field: value})
    with pytest.raises(BMCError, match="needs a sliding_window"):
        ModelSpec(**{**base, "aliases": (), "sliding_layers": 3})


def test_every_preset_is_checked():
    assert set(presets()) == set(CONFIG_JSON)


def test_lookup_is_case_insensitive_and_accepts_hf_ids():
    assert get_spec("LLaMA-7B") is get_spec("meta-llama/Llama-2-7b-hf") or get_spec("LLaMA-7B") == get_spec(
        "meta-llama/Llama-2-7b-hf")


def test_unknown_model_suggests_close_matches():
    with pytest.raises(BMCError, match="did you mean.*llama-7b"):
        get_spec("llama-7")


def test_llama_7b_parameter_count():
    s = get_spec("llama-7b")
    total = s.layers * s.layer_params() + 2 * s.head_params()
    assert 6.6e9 < total < 6.8e9  # 6.74B with embeddings


@pytest.mark.parametrize("cfg,expect", [
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
      "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000}, (2, 8, 2, 32, 256, 512, 1000, True)),
    ({"model_type": "qwen2", "num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 128,
      "intermediate_size": 300, "vocab_size": 50, "tie_word_embeddings": True}, (3, 4, 4, 32, 128, 300, 50, True)),
    ({"model_type": "opt", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "ffn_dim": 256,
      "vocab_size": 77}, (2, 4, 4, 16, 64, 256, 77, False)),
    ({"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257},
     (12, 12, 12, 64, 768, 3072, 50257, False)),
])
def test_config_json_field_names(tmp_path, cfg, expect):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    s = spec_from_config(p)
    assert (s.layers, s.heads, s.kv_heads, s.head_dim, s.hidden, s.ffn, s.vocab, s.gated_mlp) == expect


def test_malformed_config_names_the_missing_field(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64}))
    with pytest.raises(BMCError, match="num_attention_heads"):
        spec_from_config(p)
    p.write_text("{not json")
    with pytest.raises(BMCError, match="not a readable JSON"):
        spec_from_config(p)


def test_import_does_not_pull_torch():
    code = "import sys, bmc_model; bmc_model.predict('llama-7b', 2048, r=64); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_full_attention_drops_only_the_window():
    """bmc-tune's own runtime has no sliding layers: what it runs (and validate prices) is the model with none."""
    from bmc_model.core.specs import get_spec

    gemma = get_spec("gemma3-270m")
    assert gemma.sliding_count > 0
    full = gemma.full_attention()
    assert full.sliding_count == 0 and full.sliding_window is None
    assert (full.layers, full.kv_heads, full.head_dim, full.max_context) == (
        gemma.layers, gemma.kv_heads, gemma.head_dim, gemma.max_context)
    llama = get_spec("llama-7b")
    assert llama.full_attention() is llama
