"""Hugging Face transformers integration: BMCCache, a drop-in cache for `model.generate()`.

Imports torch and transformers (the `hf` extra); `import bmc_model` alone never does.
"""

from bmc_model.hf.cache import BMCCache, check_full_attention
from bmc_model.hf.layer import BMCLayer

__all__ = ["BMCCache", "BMCLayer", "check_full_attention"]
