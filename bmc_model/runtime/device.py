"""What torch sees of the device it runs on."""

from __future__ import annotations

import functools

import torch

from bmc_model.core.errors import BMCError


@functools.cache
def cuda_free_bytes() -> int:
    """Free memory of the current CUDA GPU (imports torch); BMCError when torch sees no GPU."""
    if not torch.cuda.is_available():
        raise BMCError("--device cuda: no CUDA GPU is available to torch here (torch.cuda.is_available() is "
                       "False); use --device cpu")
    return int(torch.cuda.mem_get_info()[0])
