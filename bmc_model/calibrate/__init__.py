"""Host calibration: measure the cost terms with torch, fit them robustly, build a Profile.

Importing this package does not import torch; `calibrate` does (bmc_model.calibrate.run):

    from bmc_model.calibrate import calibrate
    result = calibrate(quick=True, device="cpu", threads=2, dtype="float32", model=None)
    write_profile(result.profile, path)

Modules: plan (what to measure, RAM caps), runner (interleaved, budgeted timing loop), stats
(MAD outlier rejection), fit (robust piecewise-affine fits), bench_* (the torch operations),
overhead (step_s / layer_s net of the terms), run (orchestration), chart (terminal charts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bmc_model.calibrate.run import CalibrationResult


def calibrate(*args: Any, **kwargs: Any) -> CalibrationResult:
    from bmc_model.calibrate.run import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


__all__ = ["calibrate"]
