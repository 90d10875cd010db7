"""The code reproduces the recorded predictions, recommendations and CLI output bit for bit."""

import json

import pytest
from golden_cases import GOLDEN, compute


@pytest.fixture(scope="module")
def now() -> dict:
    return compute()


@pytest.mark.parametrize("name", ["predict", "recommend", "cli"])
def test_matches_golden(now, name):
    recorded = json.loads((GOLDEN / f"{name}.json").read_text())
    current = json.loads(json.dumps(now[name], sort_keys=True))
    assert len(current) == len(recorded)
    differ = [i for i, (a, b) in enumerate(zip(current, recorded)) if a != b]
    assert not differ, f"{name}: {len(differ)} of {len(recorded)} cases differ, first ones: {differ[:20]}"
