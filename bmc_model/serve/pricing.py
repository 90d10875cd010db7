"""Checked requests into model calls: predict() for one object; for a list, one predict_many() / choose_many()
per group of requests the array form prices together, answers put back in the body's order. Every call gets
the one Profile object the request took, so one answer never mixes two profiles."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import bmc_model
from bmc_model import BMCError, Prediction, Profile
from bmc_model.serve.schema import CHOOSE, PREDICT, Endpoint, RequestError, error_field, split_index

Kw = dict[str, object]


def prediction_dict(p: Prediction) -> dict:
    """predict()'s to_dict() with the workload keys predict_many's to_dicts() adds: one shape for both forms."""
    return {"model": p.model, "seq": p.seq, "prompt": p.prompt, "batch": p.batch, **p.to_dict()}


def _is_scalar(ep: Endpoint, key: str) -> bool:
    return key not in ep.arrays


def _hashable(v: object) -> object:
    return tuple(v) if isinstance(v, list) else v


def _group_key(ep: Endpoint, kw: Kw) -> tuple:
    """Requests one array-form call prices together: the same keys, the same scalar-only values, and alphas of
    one shape (a rate each, or lists of one length: the rows of one 2-d array)."""
    alpha = kw.get("alpha")
    shape = len(alpha) if isinstance(alpha, list) else 0
    return frozenset(kw), shape, tuple(sorted((k, _hashable(v)) for k, v in kw.items() if _is_scalar(ep, k)))


def _one_by_one(ep: Endpoint, kw: Kw, index: int | None) -> bool:
    """Requests only predict() prices: mean_new (an output-length distribution; predict_many has none).
    new_tokens is predict_many's alone: not both."""
    if ep is not PREDICT or "mean_new" not in kw:
        return False
    if "new_tokens" in kw:
        raise RequestError(400, "new_tokens cannot be combined with mean_new: give seq instead", "mean_new", index)
    return True


def _unexpected(err: Exception, index: int | None) -> RequestError:
    text = " ".join(str(err).split())[:300]
    return RequestError(422, f"could not price this request: {type(err).__name__}: {text}", None, index)


def _model_error(err: BMCError, ep: Endpoint, indices: Sequence[int | None]) -> RequestError:
    """A BMCError from a call over `indices`: its "request i: " (i within the call) to the body's index."""
    i, rest = split_index(" ".join(str(err).split()))
    index = indices[i] if i is not None and i < len(indices) else indices[0]
    return RequestError(422, rest, error_field(rest, ep), index)


def _predict(kw: Kw, profile: Profile, index: int | None) -> dict:
    try:
        return prediction_dict(bmc_model.predict(**kw, profile=profile))  # type: ignore[arg-type]
    except BMCError as err:
        raise _model_error(err, PREDICT, [index]) from None
    except Exception as err:
        raise _unexpected(err, index) from None


def _column(key: str, values: list[object]) -> object:
    """One array-form argument: a list, but alpha an ndarray (a list or tuple is predict()'s alpha, the same
    for every request; an ndarray is one rate, or one row of per-position rates, per request)."""
    return np.asarray(values, dtype=np.float64) if key == "alpha" else values


def _many(ep: Endpoint, kws: list[Kw], indices: Sequence[int | None], profile: Profile) -> list[dict]:
    """One array-form call for requests of one group (_group_key)."""
    first = kws[0]
    kwargs: Kw = {k: v for k, v in first.items() if _is_scalar(ep, k)}
    arrays = [k for k in first if not _is_scalar(ep, k)]
    kwargs.update({k: _column(k, [kw[k] for kw in kws]) for k in arrays})
    fn: Callable[..., object] = bmc_model.predict_many if ep is PREDICT else bmc_model.choose_many
    try:
        got = fn(**kwargs, profile=profile).to_dicts()  # type: ignore[attr-defined]
        want = len(kws) if arrays else 1  # no per-request value: the requests are one and the same
        if len(got) != want:
            raise RuntimeError(f"{ep.name}_many answered {len(got)} results for {want} requests")
    except BMCError as err:
        raise _model_error(err, ep, indices) from None
    except Exception as err:
        raise _unexpected(err, indices[0] if len(indices) == 1 else None) from None
    return list(got) if arrays else [dict(got[0]) for _ in kws]


def price_one(ep: Endpoint, kw: Kw, profile: Profile) -> dict:
    """One request object: predict() itself where it can (new_tokens is predict_many's), choose_many of scalars."""
    if ep is PREDICT and "new_tokens" not in kw:
        return _predict(kw, profile, None)
    if _one_by_one(ep, kw, None):  # refuses new_tokens with mean_new
        return _predict(kw, profile, None)
    return _many(ep, [kw], [None], profile)[0]


def price_list(ep: Endpoint, reqs: list[Kw], profile: Profile) -> list[dict]:
    """A list body, in its order. Every group is priced; a bad request anywhere refuses the whole body, naming
    the first bad one by index (the lowest, whatever the grouping)."""
    out: list[dict | None] = [None] * len(reqs)
    errors: list[RequestError] = []
    groups: dict[tuple, list[int]] = {}
    for i, kw in enumerate(reqs):
        try:
            if _one_by_one(ep, kw, i):
                out[i] = _predict(kw, profile, i)
                continue
        except RequestError as err:
            errors.append(err)
            continue
        groups.setdefault(_group_key(ep, kw), []).append(i)
    for indices in groups.values():
        try:
            for i, answer in zip(indices, _many(ep, [reqs[i] for i in indices], indices, profile)):
                out[i] = answer
        except RequestError as err:
            errors.append(err)
    if errors:
        raise min(errors, key=lambda e: (e.index is None, e.index or 0))
    return out  # type: ignore[return-value]


__all__ = ["CHOOSE", "PREDICT", "prediction_dict", "price_list", "price_one"]
