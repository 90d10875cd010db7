"""Fuzz HF config.json files (issue 19): realistic minimal configs of Llama, Mistral, Qwen2, Gemma-3 (text
and multimodal, whose text model is under text_config), Phi-3, Falcon, OPT and GPT-2, mutated, through
`recommend --config FILE --seq 1024 --json`: exit 0 with finite, positive predictions, or exit 2 with one
line. Broken shape fields (missing, zero, negative, fractional, strings, booleans, lists), head_dim 0,
KV heads that do not divide the heads and an unknown model_type must be rejected; harmless changes may be
accepted (a context shorter than --seq among them: the model notes it and predicts the geometry)."""

from __future__ import annotations

import copy
import json
import math

import pytest
from fuzz_inputs import INPUTS, check_result, fresh_dir, invoke, report_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODULE = "test_fuzz_configs"
TEST = f"{MODULE}::test_mutated_config"
SEQ = 1024

LLAMA = {  # TinyLlama-1.1B
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
    "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}
LLAMA32 = {  # Llama-3.2-1B: explicit head_dim, rope_scaling, tied embeddings
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": True,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "torch_dtype": "bfloat16"}
MISTRAL = {  # Mistral-7B-v0.1
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN2 = {  # Qwen2.5-0.5B: the window is off
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "sliding_window": 32768, "use_sliding_window": False,
    "max_window_layers": 24, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "rope_theta": 1000000.0}
GEMMA3_TEXT = {  # gemma-3-1b-it
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152,
    "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
    "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768, "sliding_window": 512,
    "sliding_window_pattern": 6, "query_pre_attn_scalar": 256, "rope_local_base_freq": 10000.0,
    "rope_theta": 1000000.0, "torch_dtype": "bfloat16"}
GEMMA3_MM = {  # gemma-3-4b-it: the text model under text_config, a vision tower beside it
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
    "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
    "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                    "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window": 1024,
                    "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
                      "vision_use_head": False}}
PHI3 = {  # Phi-3-mini-4k-instruct
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
    "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "sliding_window": 2047,
    "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
FALCON = {  # falcon-7b (current config names): multi-query attention, no intermediate_size (4 x hidden)
    "architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 4544,
    "num_attention_heads": 71, "num_hidden_layers": 32, "vocab_size": 65024, "multi_query": True,
    "new_decoder_architecture": False, "parallel_attn": True, "bias": False, "alibi": False,
    "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}
FALCON_NEW = {  # falcon-40b: the new decoder architecture with grouped KV heads
    "architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 8192,
    "num_attention_heads": 128, "num_kv_heads": 8, "num_hidden_layers": 60, "vocab_size": 65024,
    "new_decoder_architecture": True, "parallel_attn": True, "bias": False, "alibi": False,
    "torch_dtype": "bfloat16"}
OPT = {  # opt-125m
    "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 768, "ffn_dim": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048,
    "word_embed_proj_dim": 768, "do_layer_norm_before": True, "torch_dtype": "float16"}
GPT2 = {  # gpt2
    "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
    "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257, "n_inner": None, "activation_function": "gelu_new"}

BASES = {"llama": LLAMA, "llama3.2": LLAMA32, "mistral": MISTRAL, "qwen2": QWEN2, "gemma3-text": GEMMA3_TEXT,
         "gemma3-multimodal": GEMMA3_MM, "phi3": PHI3, "falcon": FALCON, "falcon-new": FALCON_NEW, "opt": OPT,
         "gpt2": GPT2}
# Per family: the fields that must be positive integers, and optional ones that, when given, must be too.
# (Llama has no sliding window: a sliding_window in its config is a field it does not read, as is Falcon's
# num_kv_heads without new_decoder_architecture; see _derived.)
LLAMA_SHAPE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
LLAMA_LIKE = (LLAMA_SHAPE, ("num_key_value_heads", "head_dim", "max_position_embeddings"))
WINDOWED = (LLAMA_SHAPE, ("num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window"))
FIELDS = {
    "llama": LLAMA_LIKE, "llama3.2": LLAMA_LIKE, "mistral": WINDOWED, "qwen2": WINDOWED,
    "gemma3-text": WINDOWED, "gemma3-multimodal": WINDOWED, "phi3": WINDOWED,
    "falcon": (("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size"),
               ("max_position_embeddings",)),
    "falcon-new": (("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size"), ()),
    "opt": (("hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads", "vocab_size"),
            ("max_position_embeddings",)),
    "gpt2": (("n_embd", "n_head", "n_layer", "vocab_size"), ("n_positions",)),
}
DESCRIPTIVE = ("architectures", "torch_dtype", "tie_word_embeddings", "rope_theta", "rope_scaling", "bos_token_id",
               "hidden_act", "rms_norm_eps", "use_sliding_window", "sliding_window_pattern", "parallel_attn",
               "query_pre_attn_scalar", "multi_query", "new_decoder_architecture", "activation_function",
               "max_window_layers", "original_max_position_embeddings", "n_ctx", "n_inner", "word_embed_proj_dim")
UNKNOWN_TYPES = ("mamba2", "bert", "t5", "whisper", "totally_new_model", "rwkv", "5")
VALUES: dict[str, object] = {"zero": 0, "neg": -1, "seven": 7, "huge": 10**20, "int64-max": 2**63 - 1,
                             "frac": 12.5, "intfloat": 64.0, "numstr": "32", "str": "abc", "none": None,
                             "true": True, "list": [], "dict": {}, "nan": math.nan, "inf": math.inf}
BROKEN = ("zero", "neg", "frac", "numstr", "str", "true", "list", "dict", "nan", "inf")


class ConfigCase:
    """The family, what was done to its config, why it must be refused (None: it may be accepted), and the
    file's bytes (a plain class: hypothesis prints a dataclass field by field, and a file can be 200 kB)."""

    def __init__(self, family: str, mutations: tuple[str, ...], must_reject: str | None, content: bytes) -> None:
        self.family, self.mutations, self.must_reject, self.content = family, mutations, must_reject, content

    def __repr__(self) -> str:
        return f"ConfigCase(family={self.family!r}, mutations={self.mutations!r}, must_reject={self.must_reject!r})"


def _text(cfg: dict, family: str) -> dict:
    """The dict that holds the text model's fields (text_config for the multimodal Gemma-3)."""
    if family == "gemma3-multimodal" and isinstance(cfg.get("text_config"), dict):
        return cfg["text_config"]
    return cfg


def _derived(cfg: dict, family: str) -> str | None:
    """Reasons that need the fields together: KV heads that do not divide the heads, a broken num_kv_heads
    where Falcon reads it. (A context below --seq is not one: the model notes it and predicts the geometry.)"""
    if family == "gemma3-multimodal" and not isinstance(cfg.get("text_config"), dict):
        return None
    t = _text(cfg, family)

    def pos(key):
        v = t.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    grouped = False  # Falcon reads num_kv_heads only with new_decoder_architecture (or multi_query false)
    if family.startswith("falcon"):
        grouped = t.get("new_decoder_architecture") is True or t.get("multi_query") is False
        kv = t.get("num_kv_heads")
        if grouped and kv is not None and pos("num_kv_heads") is None:
            return f"num_kv_heads {kv!r}"
    heads = pos("n_head" if family == "gpt2" else "num_attention_heads")
    kv_key = "num_kv_heads" if family.startswith("falcon") else "num_key_value_heads"
    reads_kv = grouped if family.startswith("falcon") else family not in ("gpt2", "opt")
    kv = pos(kv_key) if reads_kv else None
    if heads and kv and heads % kv:
        return f"{kv_key} {kv} does not divide {heads} heads"
    return None


@st.composite
def mutated_config(draw) -> ConfigCase:
    family = draw(st.sampled_from(sorted(BASES)))
    cfg = copy.deepcopy(BASES[family])
    required, optional = FIELDS[family]
    done: list[str] = []
    why: list[str] = []
    touched: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "model_type", "head_dim", "extra",
                                   *(["text_config"] if family == "gemma3-multimodal" else [])]))
        t = _text(cfg, family)
        if op in ("set", "delete"):
            key = draw(st.sampled_from([*required, *optional, *[k for k in DESCRIPTIVE if k in t]]))
            if key in touched or "text_config" in touched:
                continue
            touched.add(key)
            kind = draw(st.sampled_from(list(VALUES))) if op == "set" else "deleted"
            if op == "set":
                t[key] = copy.deepcopy(VALUES[kind])
                done.append(f"{key} = {VALUES[kind]!r}")
            else:
                t.pop(key, None)
                done.append(f"delete {key}")
            window_off = t.get("use_sliding_window") is False
            # Gemma3TextConfig has a default for every shape field (a multimodal text_config often lists only
            # what differs from them), so a Gemma-3 field that is absent or null may be read as the default
            defaulted = family.startswith("gemma3") and kind in ("none", "deleted")
            if key in required and (kind in BROKEN or (kind in ("none", "deleted") and not defaulted)):
                why.append(f"required {key} {kind}")
            elif key in optional and kind in BROKEN and not (key == "sliding_window" and window_off):
                why.append(f"{key} {kind}")
        elif op == "model_type":
            if "model_type" in touched:
                continue
            touched.add("model_type")
            new = draw(st.sampled_from([*UNKNOWN_TYPES, "LLAMA"]))
            cfg["model_type"] = int(new) if new.isdigit() else new
            done.append(f"model_type = {cfg['model_type']!r}")
            if new != "LLAMA":
                why.append(f"unknown model_type {new!r}")
        elif op == "head_dim":
            if family in ("gpt2", "opt", "falcon", "falcon-new") or "head_dim" in touched or "text_config" in touched:
                continue
            touched.add("head_dim")
            t["head_dim"] = 0
            done.append("head_dim = 0")
            why.append("head_dim 0")
        elif op == "extra":
            key = draw(st.sampled_from(["num_key_value_heads", "head_dim", "unknown_field", "quantization_config"]))
            if key in t or key in touched or "text_config" in touched:
                continue
            touched.add(key)
            t[key] = {"quant_method": "gptq", "bits": 4} if key == "quantization_config" else 1
            done.append(f"add {key} = {t[key]!r}")  # a field some families do not read: either way
        else:
            if "text_config" in touched or touched:
                continue
            touched.add("text_config")
            kind = draw(st.sampled_from(["delete", "list", "str", "none", "empty"]))
            if kind == "delete":
                del cfg["text_config"]
            else:
                cfg["text_config"] = {"list": [], "str": "gemma3_text", "none": None, "empty": {}}[kind]
            done.append(f"text_config {kind}")
            if kind != "empty":  # {}: every field from Gemma3TextConfig's defaults
                why.append(f"text_config {kind}")
    if not done:
        t = _text(cfg, family)
        key = required[0]
        t[key] = 0
        done.append(f"{key} = 0")
        why.append(f"required {key} zero")
    derived = _derived(cfg, family)
    if derived:
        why.append(derived)
    return ConfigCase(family, tuple(done), "; ".join(why) or None, json.dumps(cfg, indent=1).encode())


@st.composite
def whole_file(draw) -> ConfigCase:
    text = json.dumps(BASES[draw(st.sampled_from(sorted(BASES)))], indent=1)
    kind = draw(st.sampled_from(["non-utf8", "truncated", "empty", "null", "list", "string", "object", "deep"]))
    content = {"non-utf8": text.replace('"architectures"', '"archit\u00e9ctures"', 1).encode("latin-1"),
               "truncated": text.encode()[: draw(st.integers(1, len(text) - 1))], "empty": b"", "null": b"null",
               "list": b"[]", "string": b'"config"', "object": b"{}", "deep": b"[" * 100000 + b"]" * 100000}[kind]
    return ConfigCase("file", (f"file {kind}",), f"whole file: {kind}", content)


def config_cases() -> st.SearchStrategy[ConfigCase]:
    return st.one_of(mutated_config(), mutated_config(), mutated_config(), mutated_config(), whole_file())


@pytest.fixture(scope="module", autouse=True)
def _counts(request):
    yield
    report_counts(request.config, MODULE)


def run_config_case(case: ConfigCase, test: str = TEST) -> None:
    INPUTS[test] += 1
    path = fresh_dir(f"config-{case.family}") / "config.json"  # a new folder: the model name comes from it
    path.write_bytes(case.content)
    args = ["recommend", "--config", str(path), "--seq", str(SEQ), "--json"]
    res = invoke(test, args)
    check_result(res, [*args, f"# {case.family}: {case.mutations}"], must_reject=case.must_reject, json_out=True)


@settings(deadline=None, max_examples=300, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=config_cases())
def test_mutated_config(case: ConfigCase):
    run_config_case(case)


@pytest.mark.parametrize("family", sorted(BASES))
def test_unmutated_config_is_accepted(family: str):
    """The control: every family's config as published is read (exit 0, sane numbers)."""
    case = ConfigCase(family, (), None, json.dumps(BASES[family]).encode())
    INPUTS[f"{MODULE}::test_unmutated_config_is_accepted"] += 1
    path = fresh_dir(f"config-{family}") / "config.json"
    path.write_bytes(case.content)
    args = ["recommend", "--config", str(path), "--seq", str(SEQ), "--json"]
    res = invoke(f"{MODULE}::test_unmutated_config_is_accepted", args)
    check_result(res, args, json_out=True)
    assert res.exit_code == 0, f"[refused-valid-config] {family}: {res.stderr.strip()}"


def _edge_cases() -> list[tuple[str, dict, str]]:
    """Fixed inputs beside the random ones: one per class the fuzzing found or the issue names."""
    cases = [("gemma3-text", {"num_hidden_layers": 10**20}, "10**20 layers (a loop over the layers must not hang)"),
             ("gemma3-multimodal", {"num_hidden_layers": 2**63 - 1}, "2**63 - 1 layers in text_config"),
             ("llama", {"num_key_value_heads": 0}, "num_key_value_heads 0"),
             ("llama", {"num_key_value_heads": 7}, "7 KV heads for 32 heads"),
             ("mistral", {"sliding_window": 0}, "sliding_window 0"),
             ("phi3", {"sliding_window": -1}, "sliding_window -1"),
             ("llama", {"model_type": 5}, "model_type 5"),
             ("opt", {"ffn_dim": 3072.5}, "ffn_dim 3072.5"),
             ("gpt2", {"n_head": 0}, "n_head 0"),
             ("falcon-new", {"num_kv_heads": 0}, "num_kv_heads 0 with new_decoder_architecture")]
    cases += [(family, {"head_dim": 0}, "head_dim 0") for family in sorted(BASES)
              if FIELDS[family][1] and "head_dim" in FIELDS[family][1]]
    cases += [(family, {"model_type": "mamba2"}, "unknown model_type 'mamba2'") for family in ("llama", "gpt2")]
    return cases


EDGE = _edge_cases()


@pytest.mark.parametrize("family,change,why", EDGE, ids=[f"{f}: {w}" for f, _, w in EDGE])
def test_config_edge_cases(family: str, change: dict, why: str):
    cfg = copy.deepcopy(BASES[family])
    (cfg if "model_type" in change else _text(cfg, family)).update(change)
    case = ConfigCase(family, (f"{change}",), why, json.dumps(cfg).encode())
    run_config_case(case, test=f"{MODULE}::test_config_edge_cases")


def test_deep_json_config():
    """100000 nested lists: json.loads raises RecursionError, which must be an error line, not a traceback."""
    run_config_case(ConfigCase("file", ("file deep",), "whole file: deep", b"[" * 100000 + b"]" * 100000),
                    test=f"{MODULE}::test_deep_json_config")
