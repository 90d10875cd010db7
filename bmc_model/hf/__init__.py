"""Hugging Face transformers integration: BMCCache, a drop-in cache for `model.generate()`.

Imports torch and transformers (the `hf` extra); `import bmc_model` alone never does.
"""

from bmc_model.hf.cache import BMCCache, layer_windows
from bmc_model.hf.layer import BMCLayer
from bmc_model.hf.sliding import BMCSlidingLayer

__all__ = ["BMCCache", "BMCLayer", "BMCSlidingLayer", "layer_windows"]
