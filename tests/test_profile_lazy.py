"""The optional scalar lazy_backing and the host memory facts in the profile: absent, lazy_backing reads 0
(every allocated byte resident); present, `profile show` lists it."""

from __future__ import annotations

import copy
import json

from rich.console import Console

from bmc_model.cli.profile_view import host_table, scalars_table
from bmc_model.core.profile import Profile, embedded_profile
from bmc_model.core.profile_check import first_problem

BASE = embedded_profile().to_dict()


def _parsed(d: dict) -> Profile:
    return Profile.from_dict(json.loads(json.dumps(d)), source="p.json")


def _text(table) -> str:
    con = Console(record=True, width=160)
    con.print(table)
    return con.export_text()


def test_an_old_profile_without_it_reads_zero():
    d = copy.deepcopy(BASE)
    del d["scalars"]["lazy_backing"]
    del d["raw"]["lazy_backing"]
    prof = _parsed(d)
    assert prof.lazy_backing == 0.0 and first_problem(prof) is None
    assert "(default)" in _text(scalars_table(prof))


def test_the_embedded_profile_measured_it_and_its_host_facts():
    prof = embedded_profile()
    assert 0.0 <= prof.lazy_backing <= 1.0 and "lazy_backing" in prof.raw
    assert prof.host["overcommit_mode"] in (0, 1, 2)
    assert "lazy_backing" in _text(scalars_table(prof)) and "(default)" not in _text(scalars_table(prof))
    assert "reserve_limit_bytes" in _text(host_table(prof))


def test_the_ends_of_the_range_pass():
    for v in (0.0, 1.0, 1):
        d = copy.deepcopy(BASE)
        d["scalars"]["lazy_backing"] = v
        assert _parsed(d).lazy_backing == v
