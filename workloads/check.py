"""Comparing an engine's answer with the reference, and saying how they differ.

Engines hand back their own types -- numpy scalars, Arrow strings, lists
where a tuple was made -- so both sides are first brought to one canonical
form: Python scalars, tuples for every sequence, sorted tuples for sets.
Floats compare with a relative tolerance of 1e-9 (sums in another order
round differently). Dataflow sinks are multisets: their order is free.

    >>> same({"n": [("a", 1), ("b", 2.0)]}, {"n": [("b", 2), ("a", 1)]}, unordered=True)
    >>> same([1, 2], [1, 3])
    Traceback (most recent call last):
    ...
    workloads.check.WrongResult: at [1]: got 2, want 3
"""

from __future__ import annotations

import math
from collections import Counter

from engines.api import ArchbenchError

REL_TOL = 1e-9


class WrongResult(ArchbenchError, AssertionError):
    """The engine's answer differs from the reference; the message says where."""


def canonical(x):
    """``x`` in plain Python: scalars, tuples for sequences, dicts with canonical keys."""
    if x is None or isinstance(x, (bool, int, float, str, bytes)):
        return x
    if isinstance(x, dict):
        return {canonical(k): canonical(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return tuple(canonical(v) for v in x)
    if isinstance(x, (set, frozenset)):
        return tuple(sorted((canonical(v) for v in x), key=sort_key))
    if hasattr(x, "tolist"):          # numpy arrays and scalars, pandas scalars
        return canonical(x.tolist())
    if hasattr(x, "as_py"):           # Arrow scalars
        return canonical(x.as_py())
    if hasattr(x, "item"):
        return canonical(x.item())
    return x


def sort_key(x) -> str:
    """An order for any canonical value, floats rounded so near-equal ones sort together."""
    return repr(_rounded(x))


def _rounded(x):
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.9g}")
    if isinstance(x, tuple):
        return tuple(_rounded(v) for v in x)
    if isinstance(x, dict):
        return sorted((repr(_rounded(k)), _rounded(v)) for k, v in x.items())
    return x


def same(got, want, *, unordered: bool = False) -> None:
    """Raise `WrongResult` with a readable difference unless ``got`` equals ``want``.

    ``unordered``: the top level is ``{sink: items}`` and each sink's items
    may come in any order.
    """
    got, want = canonical(got), canonical(want)
    problems: list[str] = []
    if unordered and isinstance(got, dict) and isinstance(want, dict):
        _diff_keys(got, want, "", problems)
        for key in want.keys() & got.keys():
            _diff_multiset(got[key], want[key], f"[{key!r}]", problems)
    else:
        _diff(got, want, "", problems)
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise WrongResult("\n".join(shown))


def _diff_keys(got: dict, want: dict, path: str, problems: list) -> None:
    for key in sorted(want.keys() - got.keys(), key=sort_key):
        problems.append(f"at {path}: missing key {key!r}")
    for key in sorted(got.keys() - want.keys(), key=sort_key):
        problems.append(f"at {path}: unexpected key {key!r}")


def _diff(got, want, path: str, problems: list) -> None:
    """Append each difference between canonical values. Mutates ``problems``."""
    where = path or "top level"
    if isinstance(want, float) or isinstance(got, float):
        if not (isinstance(got, (int, float)) and isinstance(want, (int, float))
                and math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-12)):
            problems.append(f"at {where}: got {got!r}, want {want!r}")
    elif isinstance(want, dict) and isinstance(got, dict):
        _diff_keys(got, want, where, problems)
        for key in sorted(want.keys() & got.keys(), key=sort_key):
            _diff(got[key], want[key], f"{path}[{key!r}]", problems)
    elif isinstance(want, tuple) and isinstance(got, tuple):
        if len(got) != len(want):
            problems.append(f"at {where}: got {len(got)} items, want {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            _diff(g, w, f"{path}[{i}]", problems)
    elif got != want:
        problems.append(f"at {where}: got {got!r}, want {want!r}")


def _diff_multiset(got, want, path: str, problems: list) -> None:
    if not (isinstance(got, tuple) and isinstance(want, tuple)):
        return _diff(got, want, path, problems)
    got_sorted = sorted(got, key=sort_key)
    want_sorted = sorted(want, key=sort_key)
    inner: list[str] = []
    if len(got) == len(want):
        for g, w in zip(got_sorted, want_sorted):
            _diff(g, w, path, inner)
        if not inner:
            return
    have, need = Counter(map(sort_key, got)), Counter(map(sort_key, want))
    missing, extra = list((need - have).elements()), list((have - need).elements())
    problems.append(f"at {path}: got {len(got)} items, want {len(want)}; "
                    f"{len(missing)} missing (e.g. {', '.join(missing[:3])}), "
                    f"{len(extra)} unexpected (e.g. {', '.join(extra[:3])})")
