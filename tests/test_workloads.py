"""Every workload on every available engine at tiny size, against its reference."""

from __future__ import annotations

import pytest

from conftest import require_workload
from engines import get_engine
from workloads import get_workload, workload_names
from workloads.check import WrongResult, same


@pytest.mark.parametrize("name", workload_names())
def test_workload_matches_its_reference(session, name):
    """``run`` on every engine; the columnar form ``run_columnar`` on the columnar variants."""
    workload = get_workload(name)
    require_workload(session, workload)
    inputs = workload.generate(seed=7, **workload.sizes["tiny"])
    got = workload.runner(get_engine(session.engine))(session, inputs)
    workload.check(got, workload.reference(inputs))


@pytest.mark.parametrize("name", workload_names())
def test_generators_are_deterministic(name):
    workload = get_workload(name)
    size = workload.sizes["tiny"]
    a, b, c = (workload.generate(seed=s, **size) for s in (1, 1, 2))
    assert workload.reference(a) == workload.reference(b)
    assert workload.reference(a) != workload.reference(c)
    assert workload.units(a) > 0


def test_the_check_catches_a_wrong_answer_and_says_where():
    with pytest.raises(WrongResult, match=r"\['counts'\].*1 missing.*'c'.*1 unexpected.*'b'"):
        same({"counts": [("a", 1), ("b", 2)]}, {"counts": [("a", 1), ("c", 2)]}, unordered=True)
    with pytest.raises(WrongResult, match=r"at \[1\]: got 2.5, want 2.6"):
        same((1, 2.5), (1, 2.6))
    same({"x": [(1, 0.1 + 0.2)]}, {"x": [(1, 0.3)]}, unordered=True)   # float sums in another order
