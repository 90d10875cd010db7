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
    """Two panels over r, ms/token and peak resident KV, one curve per width mode; the pick and the named
    baselines marked on both (a point where they have an r, a dashed line where they do not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = rec.prediction
    tokens = p.seq - p.prompt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for lab, sw in rec.sweeps.items():
        xs, ys = curve(rec, lab, points=200)
        top.plot(xs, ys, label=lab)
        idx = [min(int(x), len(sw.r)) - 1 for x in xs]
        bottom.plot(xs, [float(sw.resident_bytes[i]) / 2**20 for i in idx], label=lab)
    marks = [("recommended", p), *rec.baselines.items()]
    for k, (name, b) in enumerate(marks):
        color, mib = f"C{(k + len(rec.sweeps)) % 10}", b.peak_resident_bytes / 2**20
        style = {"color": "black" if name == "recommended" else color, "label": f"{name}: {b.policy.label}"}
        if b.r is not None:
            top.plot([b.r], [b.ms_per_token], "o", **style)
            bottom.plot([b.r], [mib], "o", color=style["color"])
        else:
            top.axhline(b.ms_per_token, ls="--", lw=1, **style)
            bottom.axhline(mib, ls="--", lw=1, color=style["color"])
    top.set_xscale("log")
    top.set_ylabel("predicted ms/token")
    bottom.set_ylabel("peak resident KV (MiB)")
    bottom.set_xlabel("r (rows per growth event)")
    top.set_title(f"{p.model}, seq {p.seq}, prompt {p.prompt}, batch {p.batch}: {tokens} tokens")
    top.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as err:  # e.g. under /proc, or the disk full
        raise BMCError(f"--plot {path}: cannot write ({err.strerror or err})") from None
    finally:
        plt.close(fig)
