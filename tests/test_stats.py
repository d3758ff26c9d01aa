"""The statistics behind every verdict, on rows made for the purpose."""

from __future__ import annotations

import random

from harness.stats import compare, median_interval, rank, repeats_needed


def noisy(center: float, n: int, spread: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_a_clearly_faster_engine_wins_and_the_win_is_significant():
    ranked, leaders = rank({"slow": noisy(2.0, 6, 0.03, 1), "fast": noisy(1.0, 6, 0.03, 2)})
    assert ranked[0].engine == "fast" and leaders.significant
    assert 1.8 < ranked[1].ratio < 2.2 and ranked[1].ratio_low <= ranked[1].ratio <= ranked[1].ratio_high


def test_two_engines_within_noise_are_indistinguishable_never_a_winner_by_noise():
    results = [compare(noisy(1.0, 10, 0.2, s), noisy(1.0, 10, 0.2, 100 + s)) for s in range(20)]
    # the same distribution, 20 pairs of draws: at most what alpha allows is called different
    assert sum(r.significant for r in results) <= 2
    assert {r.verdict for r in results if not r.significant} == {"indistinguishable at 10 repeats"}
    ranked, leaders = rank({"a": noisy(1.0, 10, 0.2, 7), "b": noisy(1.0, 10, 0.2, 8)})
    assert not leaders.significant            # a first place, but not a winner


def test_three_repeats_can_never_be_significant_and_the_answer_says_how_many_would_be():
    result = compare([1.0, 1.01, 0.99], [3.0, 3.01, 2.99])     # as clear as data gets
    assert not result.significant and result.verdict == "indistinguishable at 3 repeats"
    assert result.needed == 4 == repeats_needed([1.0, 1.01, 0.99], [3.0, 3.01, 2.99])
    assert repeats_needed(noisy(1.0, 5, 0.3, 3), noisy(1.1, 5, 0.3, 4)) > 4   # a small effect in noise needs more


def test_the_median_interval_says_what_confidence_it_really_has():
    assert median_interval([5.0, 1.0, 3.0]) == (1.0, 5.0, 0.75)
    low, high, level = median_interval(noisy(1.0, 30, 0.1, 5))
    assert level >= 0.95 and low < high
