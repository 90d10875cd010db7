"""What the OS holds or would grant (core/host.py): resident size, overcommit mode and the largest single
reservation, parsed from /proc text so each mode is testable on any machine."""

from __future__ import annotations

import os
import sys

import pytest

from bmc_model.core import host
from bmc_model.core.host import memory_facts, parse_meminfo, reserve_limit, rss_bytes

GiB = 2**30
MEMINFO = """MemTotal:       24684092 kB
MemFree:        20000000 kB
MemAvailable:   22000000 kB
SwapTotal:       2097152 kB
CommitLimit:    12342044 kB
Committed_AS:      47956 kB
HugePages_Total:       0
garbage line
"""


def test_meminfo_parses_to_bytes_and_skips_what_does_not_parse():
    m = parse_meminfo(MEMINFO)
    assert m["MemTotal"] == 24684092 * 1024 and m["SwapTotal"] == 2 * GiB
    assert m["HugePages_Total"] == 0  # a count, no kB: kept as is
    assert "garbage line" not in m and parse_meminfo("") == {}


def test_reserve_limit_for_each_overcommit_mode():
    m = parse_meminfo(MEMINFO)
    assert reserve_limit(0, m) == (24684092 + 2097152) * 1024  # heuristic: RAM + swap
    assert reserve_limit(1, m) is None  # always: no limit
    assert reserve_limit(2, m) == (12342044 - 47956) * 1024  # never: what CommitLimit leaves now
    over = parse_meminfo("CommitLimit: 100 kB\nCommitted_AS: 200 kB\n")
    assert reserve_limit(2, over) == 0.0  # committed past the limit: nothing more is granted
    assert reserve_limit(None, m) is None and reserve_limit(0, {}) is None and reserve_limit(2, {}) is None


def test_reserve_limit_bytes_reads_this_machine(monkeypatch):
    texts = {"/proc/sys/vm/overcommit_memory": "2\n", "/proc/meminfo": MEMINFO}
    monkeypatch.setattr(host, "_read", texts.get)
    assert host.overcommit_mode() == 2
    assert host.reserve_limit_bytes() == (12342044 - 47956) * 1024
    assert memory_facts() == {"overcommit_mode": 2, "reserve_limit_bytes": (12342044 - 47956) * 1024}
    texts["/proc/sys/vm/overcommit_memory"] = "1\n"
    assert memory_facts() == {"overcommit_mode": 1}  # no limit: left out
    monkeypatch.setattr(host, "_read", lambda path: None)
    assert memory_facts() == {} and host.reserve_limit_bytes() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_rss_and_facts_on_linux():
    rss = rss_bytes()
    assert rss is not None and 0 < rss and rss % os.sysconf("SC_PAGE_SIZE") == 0
    facts = memory_facts()
    assert facts["overcommit_mode"] in (0, 1, 2)
    assert facts["overcommit_mode"] == 1 or facts["reserve_limit_bytes"] >= 0
