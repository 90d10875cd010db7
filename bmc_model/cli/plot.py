"""`recommend --plot FILE`: the cost curves as an image file (matplotlib), its destination checked before
anything is computed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from bmc_model.cli.recommend_view import curve
from bmc_model.core.decide import Recommendation
from bmc_model.core.errors import BMCError

FORMATS = (".png", ".svg", ".pdf")


def check_plot_path(path: Path) -> None:
    """One-line errors for what matplotlib would fail on after the work, or silently turn into another
    name: a folder (it would write FOLDER.png), no or an unknown extension, a missing or unwritable folder."""
    if "\x00" in str(path):  # the OS refuses it, and pathlib raises ValueError for it
        raise BMCError(f"--plot {str(path)!r}: a file name cannot hold a NUL character")
    if path.is_dir():
        raise BMCError(f"--plot {path} is a folder: give a file name, e.g. {path / 'recommend.png'}")
    if path.suffix.lower() not in FORMATS:
        raise BMCError(f"--plot {path}: the file name must end in {', '.join(FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        raise BMCError(f"--plot {path}: {folder} is not an existing folder")
    if not os.access(folder, os.W_OK):
        raise BMCError(f"--plot {path}: {folder} is not writable")
    if importlib.util.find_spec("matplotlib") is None:
        raise BMCError("--plot needs matplotlib: pip install 'bmc-tune[plot]'")


def write_plot(rec: Recommendation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for lab in rec.sweeps:
        xs, ys = curve(rec, lab, points=200)
        ax.plot(xs, ys, label=lab)
    p = rec.prediction
    ax.plot([p.policy.r], [p.ms_per_token], "ko", label=f"recommended r={p.policy.r} {p.width}")
    ax.set_xscale("log")
    ax.set_xlabel("r (rows per growth event)")
    ax.set_ylabel("predicted ms/token")
    ax.set_title(f"{p.model}, seq {p.seq}, prompt {p.prompt}, batch {p.batch}")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as err:  # e.g. under /proc, or the disk full
        raise BMCError(f"--plot {path}: cannot write ({err.strerror or err})") from None
    finally:
        plt.close(fig)
