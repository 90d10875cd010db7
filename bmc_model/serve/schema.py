"""JSON bodies into keyword arguments: strict JSON in, every field type-checked before the model sees it, and
every refusal a RequestError that names the field and the request's index in a list body. Ranges (seq > 0,
alpha in [0, 1)) are the model's to check: its BMCError names the argument too."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from bmc_model import BMCError
from bmc_model.core.inputs import parse_bytes

MAX_BODY_BYTES = 10 * 2**20  # 10 MiB: a 100,000-request list of plain requests is about 6 MB
MAX_ITEMS = 100_000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what the model's arrays hold; anything past is a typo, not a length
REFUSED = ("profile", "config", "lengths")  # they name files on the server's disk


@dataclass
class RequestError(Exception):
    """A refused body: status 4xx, a one-line message, the field it names and the index in a list body."""

    status: int
    message: str
    field: str | None = None
    index: int | None = None

    def __str__(self) -> str:
        return self.message


def _what(v: object) -> str:
    """A JSON value as a message names it: its type, and a short excerpt."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    text = json.dumps(v)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"a string {text}" if isinstance(v, str) else f"the number {text}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(name: str, v: object) -> object:
    if not _is_int(v):
        raise RequestError(400, f"{name} must be an integer, got {_what(v)}", name)
    return v


def _num(name: str, v: object) -> object:
    if not _is_num(v):
        raise RequestError(400, f"{name} must be a number, got {_what(v)}", name)
    return v


def _str(name: str, v: object) -> object:
    if not isinstance(v, str):
        raise RequestError(400, f"{name} must be a string, got {_what(v)}", name)
    return v


def _alpha(name: str, v: object) -> object:
    """A rate, or a non-empty list of them (one per draft position, the last repeating)."""
    if _is_num(v) or isinstance(v, list) and v and all(_is_num(a) for a in v):
        return v
    raise RequestError(400, f"{name} must be a number or a non-empty list of numbers (one per draft position), "
                       f"got {_what(v)}", name)


def _size(name: str, v: object) -> object:
    """Bytes: a number, or a string with a unit ("8G", "512MiB"), read here so a list holds numbers only."""
    if isinstance(v, str):
        try:
            return parse_bytes(v)
        except BMCError as err:
            raise RequestError(422, f"{name}: {err}", name) from None
    if not _is_num(v):
        raise RequestError(400, f"{name} must be a number of bytes or a size such as \"8G\", got {_what(v)}", name)
    return v


def _list_of(check: Callable[[str, object], object], what: str) -> Callable[[str, object], object]:
    def checked(name: str, v: object) -> object:
        if not isinstance(v, list):
            raise RequestError(400, f"{name} must be a list of {what}, got {_what(v)}", name)
        for x in v:
            try:
                check(name, x)
            except RequestError:
                raise RequestError(400, f"{name} must be a list of {what}, it holds {_what(x)}", name) from None
        return v
    return checked


def _widths(name: str, v: object) -> object:
    return v if isinstance(v, str) else _list_of(_str, "strings")(name, v)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint's fields: each one's check, and which of them the array form takes one value a request of
    (the rest are one value a call: a list body is grouped by them)."""

    name: str
    fields: dict[str, Callable[[str, object], object]]
    arrays: frozenset[str]

    def known(self) -> str:
        return ", ".join(self.fields)


PREDICT = Endpoint("predict", {
    "model": _str, "seq": _int, "prompt": _int, "new_tokens": _int, "batch": _int, "policy": _str, "r": _int,
    "width": _str, "gamma": _int, "alpha": _alpha, "draft": _str, "draft_cost": _num, "dtype": _str,
    "layers": _int, "runtime": _str, "max_new": _int, "mean_new": _num,
}, frozenset({"seq", "prompt", "new_tokens", "batch", "r", "width", "policy", "gamma", "alpha", "max_new"}))

CHOOSE = Endpoint("choose", {
    "model": _str, "seq": _int, "prompt": _int, "new_tokens": _int, "batch": _int, "gamma": _int, "alpha": _alpha,
    "draft": _str, "draft_cost": _num, "dtype": _str, "layers": _int, "runtime": _str, "max_new": _int,
    "max_mem": _size, "tolerance": _num, "widths": _widths, "r_grid": _list_of(_int, "integers"),
    "named": _list_of(_str, "strings"), "pad": _int,
}, frozenset({"seq", "prompt", "new_tokens", "batch", "gamma", "alpha", "max_new", "max_mem"}))


# -- strict JSON --------------------------------------------------------------------------------------------

def _parse_int(text: str) -> int:
    if len(text) > 20:  # int() of thousands of digits is slow, and Python refuses 4,300 or more
        raise RequestError(400, f"integer {text[:12]}... ({len(text)} digits) is out of range")
    v = int(text)
    if not INT_MIN <= v <= INT_MAX:
        raise RequestError(400, f"integer {text} is out of range (at most {INT_MAX})")
    return v


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise RequestError(400, f"number {text[:24]} is out of range (it overflows a double)")
    return v


def _refuse_constant(text: str) -> float:
    raise RequestError(400, f"{text} is not JSON: numbers must be finite")


class _Bad:
    """Where a refused number stood, in the lenient second parse that finds its field."""


def _lenient(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parsed(text: str) -> object:
        try:
            return parse(text)
        except RequestError:
            return _Bad()
    return parsed


def _where(data: object, err: RequestError) -> RequestError:
    """The refused number's field and index: the first _Bad in a request object (at the top or in a list)."""
    objs = [(None, data)] if isinstance(data, dict) else list(enumerate(data)) if isinstance(data, list) else []
    for index, obj in objs:
        for key, value in obj.items() if isinstance(obj, dict) else ():
            if isinstance(value, _Bad) or isinstance(value, list) and any(isinstance(v, _Bad) for v in value):
                return RequestError(400, f"{key}: {err.message}", key, index)
    return err


def parse_json(body: bytes) -> object:
    """The body as strict JSON: NaN, Infinity and numbers that overflow are refused (Python's json takes them)."""
    if not body.strip():
        raise RequestError(400, "empty body: send a JSON object (one request) or a list of them")
    try:
        return json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except RequestError as err:  # parse again, leniently, to say which field held it
        try:
            lenient = json.loads(body, parse_int=_lenient(_parse_int), parse_float=_lenient(_parse_float),
                                 parse_constant=_lenient(_refuse_constant))
        except (ValueError, RecursionError):  # broken further on too: the number is still what to say
            raise err from None
        raise _where(lenient, err) from None
    except RecursionError:
        raise RequestError(400, "body is not usable JSON: nested too deeply") from None
    except UnicodeDecodeError as err:
        raise RequestError(400, f"body is not UTF-8 text (byte at offset {err.start})") from None
    except ValueError as err:  # JSONDecodeError
        raise RequestError(400, f"body is not JSON: {err}") from None


# -- requests -------------------------------------------------------------------------------------------------

def check_request(obj: object, ep: Endpoint, index: int | None = None) -> dict[str, object]:
    """One request object into keyword arguments; a null value is a field not given."""
    if not isinstance(obj, dict):
        raise RequestError(400, f"a request must be a JSON object, got {_what(obj)}", None, index)
    out: dict[str, object] = {}
    for key, value in obj.items():
        if key in REFUSED:
            raise RequestError(400, f"field {key!r} is not accepted over HTTP: it names a file on the server's disk "
                               "(the server prices with its own --profile; see GET /profile)", key, index)
        check = ep.fields.get(key)
        if check is None:
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise RequestError(400, f"unknown field {shown!r} (known: {ep.known()})", shown, index)
        if value is None:
            continue
        try:
            out[key] = check(key, value)
        except RequestError as err:
            err.index = index
            raise
    return out


def check_body(data: object, ep: Endpoint) -> dict[str, object] | list[dict[str, object]]:
    """A parsed body: one request (an object) or a list of them (an empty list is an empty answer)."""
    if isinstance(data, dict):
        return check_request(data, ep)
    if isinstance(data, list):
        if len(data) > MAX_ITEMS:
            raise RequestError(400, f"a list body holds at most {MAX_ITEMS:,} requests, got {len(data):,}")
        return [check_request(obj, ep, i) for i, obj in enumerate(data)]
    raise RequestError(400, f"body must be a JSON object (one request) or a list of them, got {_what(data)}")


_PREFIX = re.compile(r"request (\d+): ", re.ASCII)
_WORD = re.compile(r"[A-Za-z_][A-Za-z_-]*")


def split_index(message: str) -> tuple[int | None, str]:
    """predict_many's "request i: ..." into (i, the rest); (None, message) without one."""
    m = _PREFIX.match(message)
    return (int(m.group(1)), message[m.end():]) if m else (None, message)


def error_field(message: str, ep: Endpoint) -> str | None:
    """The field a model error names: the first field among its first three words ("seq must be ...",
    "--alpha needs ...", "unknown model ...", "max-new must be ..."); None if none is one."""
    for word in _WORD.findall(message[:80])[:3]:
        if word.replace("-", "_") in ep.fields:
            return word.replace("-", "_")
    return None
