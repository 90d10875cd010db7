"""Profile's typed attributes read its terms and scalars by name, and say None (or the default) for the
optional ones a profile lacks."""

import pytest

from bmc_model.core.profile import (
    OPTIONAL_SCALARS,
    OPTIONAL_TERMS,
    SCALAR_NAMES,
    TERM_NAMES,
    Profile,
    Term,
    embedded_profile,
)


def test_every_named_term_and_scalar_reads_its_entry():
    prof = embedded_profile()
    for name in (*TERM_NAMES, *OPTIONAL_TERMS):
        assert getattr(prof, name) is prof.terms.get(name)
    for name in (*SCALAR_NAMES, *OPTIONAL_SCALARS, "hf_step_s", "hf_layer_s"):
        assert getattr(prof, name) == prof.scalars.get(name)


def test_absent_entries_optional_read_none_or_default_required_raise():
    one = Term(c0=(1.0,), slope=(2.0,))
    prof = Profile(terms={"alloc": one}, scalars={"step_s": 3.0})
    assert prof.alloc is one and prof.step_s == 3.0
    assert (prof.cat, prof.layer_fixed, prof.layer_row, prof.hf_step_s, prof.hf_layer_s) == (None,) * 5
    assert prof.gemv_row_s == OPTIONAL_SCALARS["gemv_row_s"]
    for name in ("copy", "weights", "layer_s", "sd_iter_s"):
        with pytest.raises(AttributeError, match=name):
            getattr(prof, name)


def test_hf_runtime_drops_the_in_place_layer_terms():
    base = embedded_profile().to_dict()
    base["scalars"].update(hf_step_s=1e-3, hf_layer_s=2e-4)
    prof = Profile.from_dict(base, source="t")
    hf = prof.for_runtime("hf")
    assert (hf.step_s, hf.layer_s, hf.layer_fixed, hf.layer_row) == (1e-3, 2e-4, None, None)
    assert hf.cat is prof.cat and hf.alloc is prof.alloc
