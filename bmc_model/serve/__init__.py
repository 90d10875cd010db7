"""`bmc-tune serve`: predictions over HTTP for schedulers (JSON in, JSON out), on one profile that reloads
when its file changes. Imports starlette (the `serve` extra), the model core and the public API; never torch."""

from bmc_model.serve.app import PROFILE_HEADER, create_app
from bmc_model.serve.profile_watch import ProfileHolder, fingerprint

__all__ = ["PROFILE_HEADER", "ProfileHolder", "create_app", "fingerprint"]
