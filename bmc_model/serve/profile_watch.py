"""The profile the server prices with, and its reload: a changed file is parsed whole and swapped in only if
it parses, so a half-written file is never used; a request reads `holder.current` once and prices with it."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from bmc_model import BMCError, Profile, load_profile
from bmc_model.core.profile import default_profile_path, embedded_profile

EMBEDDED = "embedded default"
StatKey = tuple[int, int, int, int]  # (mtime_ns, size, inode, device): any rewrite changes one of them


def fingerprint(data: bytes) -> str:
    """What X-BMC-Profile says: 16 hex digits of the SHA-256 of the bytes parsed (the same file, the same id)."""
    return hashlib.sha256(data).hexdigest()[:16]


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Loaded:
    """One parsed profile and what identifies it; replaced whole, never changed (requests hold it)."""

    profile: Profile
    fingerprint: str
    source: str  # the file's path, or EMBEDDED
    mtime: float | None  # the file's, when it was read (None: embedded)
    loaded_at: float


def _stat(path: Path) -> StatKey | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


def _embedded() -> Loaded:
    data = (resources.files("bmc_model") / "data" / "default_profile.json").read_bytes()
    return Loaded(embedded_profile(), fingerprint(data), EMBEDDED, None, time.time())


def _load(path: Path) -> Loaded | None:
    """The file parsed by load_profile, or None when it changed while being read (try again next poll)."""
    before = path.read_bytes()
    mtime = os.stat(path).st_mtime
    prof = load_profile(path)
    if path.read_bytes() != before:  # rewritten in between: the bytes hashed may not be the ones parsed
        return None
    return Loaded(prof, fingerprint(before), str(path), mtime, time.time())


@dataclass
class ProfileHolder:
    """The loaded profile and the reload counters. check() is called by one poller at a time; requests only
    read `current` (one attribute, swapped by one assignment: a request never sees half a reload)."""

    path: Path
    explicit: bool  # --profile given: a vanished file is an error; the default path falls back to the embedded
    current: Loaded
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    _seen: StatKey | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path | None) -> ProfileHolder:
        """get_profile's choice: the file given, else the cached calibrated one, else the embedded default.
        A bad file raises BMCError (the server does not start on it)."""
        explicit = path is not None
        where = Path(path) if explicit else default_profile_path()
        try:
            seen = _stat(where)
        except OSError as err:
            raise BMCError(f"profile {where}: cannot read ({err.strerror or err})") from None
        if seen is None and not explicit:
            return cls(where, explicit, _embedded(), _seen=None)
        loaded = None
        while loaded is None:  # None only while someone rewrites the file as we read it
            try:
                seen = _stat(where)
                loaded = _load(where)
            except FileNotFoundError:
                raise BMCError(f"profile not found: {where}") from None
            except OSError as err:
                raise BMCError(f"profile {where}: cannot read ({err.strerror or err})") from None
        return cls(where, explicit, loaded, _seen=seen)

    def check(self) -> bool:
        """Look at the file once; reload it if it changed. True when a new profile was swapped in."""
        try:
            key = _stat(self.path)
        except OSError as err:
            return self._fail(f"cannot stat {self.path}: {err.strerror or err}", None)
        if key == self._seen:
            return False
        if key is None:
            if self.explicit:
                return self._fail(f"profile not found: {self.path} (keeping the last good one)", key)
            self._seen = None
            if self.current.source == EMBEDDED:
                return False
            return self._swap(_embedded())  # as get_profile(None) does once the cached file is gone
        try:
            loaded = _load(self.path)
        except BMCError as err:
            return self._fail(str(err), key)
        except OSError as err:
            return self._fail(f"profile {self.path}: cannot read ({err.strerror or err})", key)
        except Exception as err:  # whatever a broken file provokes, the server keeps the good profile
            return self._fail(f"profile {self.path}: {type(err).__name__}: {err}", key)
        if loaded is None:
            self._seen = None  # changed while read: look again at the next poll
            return False
        self._seen = key
        return self._swap(loaded)

    def _swap(self, loaded: Loaded) -> bool:
        self.current = loaded
        self.reloads += 1
        return True

    def _fail(self, message: str, key: StatKey | None) -> bool:
        # remember the bad file's stat: it is not parsed again until it changes (a writer finishing it does)
        self._seen = key
        self.failures += 1
        self.last_error = " ".join(message.split())
        self.last_error_at = time.time()
        return False

    def to_dict(self) -> dict:
        """What GET /profile answers."""
        cur = self.current
        return {"path": str(self.path), "source": cur.source, "describe": cur.profile.describe(),
                "fingerprint": cur.fingerprint, "mtime": iso(cur.mtime), "loaded_at": iso(cur.loaded_at),
                "reloads": self.reloads, "reload_failures": self.failures, "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at)}
