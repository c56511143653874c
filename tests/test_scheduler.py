from __future__ import annotations

import math
import random
from collections import Counter
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.core.model import Profile
from endosec.core.scheduler import (
    CredibilityWeightedScheduler,
    MaxDissimilarityScheduler,
    RandomScheduler,
    RoundRobinScheduler,
    majority_shared,
    scheduler_from_config,
)
from endosec.core.trust import TrustBook

POLICIES = ["random", "round-robin", "max-dissimilarity", "credibility-weighted"]


def prof(name: str, *components: str) -> Profile:
    return Profile(name, frozenset(components))


def trust_of(pool, value: float = 1.0) -> dict[str, float]:
    return {p.name: value for p in pool}


def pair_sum(members) -> float:
    return sum(a.jaccard_distance(b) for a, b in combinations(members, 2))


# -- configuration and contract ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [
    ("random", RandomScheduler),
    ("round-robin", RoundRobinScheduler),
    ("max-dissimilarity", MaxDissimilarityScheduler),
    ("credibility-weighted", CredibilityWeightedScheduler),
])
def test_from_config(name, kind) -> None:
    assert isinstance(scheduler_from_config(name), kind)


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        scheduler_from_config("clever")


@pytest.mark.parametrize("name", POLICIES)
def test_count_out_of_range_is_refused(name) -> None:
    pool = [prof("a", "x"), prof("b", "y")]
    s = scheduler_from_config(name)
    with pytest.raises(ValueError, match="cannot pick 3"):
        s.choose(pool, [], 3, trust_of(pool), random.Random(0))
    with pytest.raises(ValueError, match="cannot pick -1"):
        s.retire(pool, -1, trust_of(pool), random.Random(0))


@pytest.mark.parametrize("name", POLICIES)
def test_zero_count_chooses_nothing(name) -> None:
    pool = [prof("a", "x"), prof("b", "y")]
    s = scheduler_from_config(name)
    assert s.choose(pool, [], 0, trust_of(pool), random.Random(0)) == []
    assert s.retire(pool, 0, trust_of(pool), random.Random(0)) == []


pools = st.integers(1, 9).flatmap(lambda n: st.lists(
    st.frozensets(st.sampled_from(["os:a", "os:b", "os:c", "srv:x", "srv:y", "lib:1", "lib:2"]),
                  max_size=4),
    min_size=n, max_size=n,
).map(lambda comps: [Profile(f"e{i}", c) for i, c in enumerate(comps)]))


@given(pool=pools, data=st.data(), name=st.sampled_from(POLICIES), seed=st.integers(0, 2**32))
def test_choices_are_valid_and_replay_from_the_seed(pool, data, name, seed) -> None:
    split = data.draw(st.integers(0, len(pool)))
    keep, candidates = pool[:split], pool[split:]
    count = data.draw(st.integers(0, len(candidates)))
    trust = {p.name: data.draw(st.floats(0, 1)) for p in pool}
    runs = []
    for _ in range(2):
        s = scheduler_from_config(name)
        rng = random.Random(seed)
        runs.append((s.choose(candidates, keep, count, trust, rng),
                     s.retire(pool, min(count, len(pool)), trust, rng)))
    chosen, retired = runs[0]
    assert runs[0] == runs[1]
    assert len(chosen) == len(set(chosen)) == count
    assert set(chosen) <= {p.name for p in candidates}
    assert len(retired) == len(set(retired)) == min(count, len(pool))
    assert set(retired) <= {p.name for p in pool}


# -- random and round-robin -------------------------------------------------------------------


def test_random_depends_on_the_generator() -> None:
    pool = [prof(f"e{i}", f"c{i}") for i in range(12)]
    s = RandomScheduler()
    picks = {tuple(s.choose(pool, [], 3, trust_of(pool), random.Random(seed)))
             for seed in range(20)}
    assert len(picks) > 1


def activations(trust: dict[str, float], count: int, draws: int, seed: int = 0) -> Counter[str]:
    """How often each name joins, over ``draws`` choices of ``count`` from all of ``trust``."""
    pool = [prof(name, f"c:{name}") for name in trust]
    rng, s, seen = random.Random(seed), RandomScheduler(), Counter[str]()
    for _ in range(draws):
        seen.update(s.choose(pool, [], count, trust, rng))
    return seen


def binomial(hits: int, draws: int, p: float) -> bool:
    """``hits`` in ``draws`` is what probability ``p`` gives, within 4.5 binomial standard
    deviations (a chance under 1e-5 to fail by bad luck, per assertion)."""
    return abs(hits - draws * p) <= 4.5 * math.sqrt(draws * p * (1 - p))


def test_random_activates_in_proportion_to_credibility() -> None:
    """More points (and a better record), more activations: each spare joins with probability
    its score over the sum of scores, and a uniform pick would not pass the same bound."""
    book = TrustBook(["fresh", "veteran", "elder"], decay=1.0)
    book.record_agreements("veteran", 100)
    book.record_agreements("elder", 300)
    trust = book.snapshot()
    assert book.points("fresh") < book.points("veteran") < book.points("elder")
    draws = 4000
    seen = activations(trust, 1, draws)
    total = sum(trust.values())
    for name, w in trust.items():
        assert binomial(seen[name], draws, w / total), (name, seen)
    assert seen["fresh"] < seen["veteran"] < seen["elder"]
    assert not binomial(seen["fresh"], draws, 1 / 3)


def test_random_draws_without_replacement_in_proportion() -> None:
    """Choosing two: each draw is proportional among those left, so a name is in the pair with
    probability p_i + sum over j != i of p_j p_i / (1 - p_j)."""
    trust = {"a": 0.1, "b": 0.3, "c": 0.6}
    draws = 4000
    seen = activations(trust, 2, draws)
    assert sum(seen.values()) == 2 * draws
    for name, p in trust.items():
        inclusion = p + sum(q * p / (1 - q) for other, q in trust.items() if other != name)
        assert binomial(seen[name], draws, inclusion), (name, seen)


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_random_with_equal_credibility_is_uniform(value: float) -> None:
    trust = dict.fromkeys(["a", "b", "c", "d"], value)
    draws = 4000
    seen = activations(trust, 1, draws)
    assert all(binomial(seen[name], draws, 1 / 4) for name in trust), seen


def test_random_takes_no_credibility_0_while_others_remain() -> None:
    """Zero comes only after every positive one, and then uniformly: what the controller offers
    may vote, so the seats are filled."""
    trust = {"z1": 0.0, "p1": 0.2, "z2": 0.0, "p2": 0.9, "p3": 0.01}
    positive = {n for n, w in trust.items() if w > 0}
    draws = 2000
    assert activations(trust, 3, draws) == dict.fromkeys(positive, draws)
    seen = activations(trust, 4, draws)
    assert all(seen[n] == draws for n in positive)
    assert seen["z1"] + seen["z2"] == draws and binomial(seen["z1"], draws, 1 / 2)


def test_random_activation_replays_from_the_seed() -> None:
    trust = {"a": 0.05, "b": 0.4, "c": 0.41, "d": 0.9, "e": 0.0}
    pool = [prof(n, f"c:{n}") for n in trust]

    def picks(seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [RandomScheduler().choose(pool, [], 2, trust, rng) for _ in range(30)]

    assert picks(7) == picks(7)
    assert len({tuple(map(tuple, picks(seed))) for seed in range(5)}) == 5


def test_random_retires_whatever_the_credibility() -> None:
    """Rotation wipes footholds, and a quiet foothold keeps its trust: retirement ignores it."""
    pool = [prof(f"e{i}", f"c{i}") for i in range(6)]
    low = {p.name: 0.01 * (i + 1) for i, p in enumerate(pool)}
    high = {p.name: 1.0 - 0.1 * i for i, p in enumerate(pool)}
    for seed in range(50):
        assert RandomScheduler().retire(pool, 2, low, random.Random(seed)) == \
            RandomScheduler().retire(pool, 2, high, random.Random(seed))


@pytest.mark.parametrize(("trust", "match"), [
    ({"a": 0.5}, "no trust score for executor 'b'"),
    ({"a": 0.5, "b": -0.1}, "'b'.*>= 0"),
    ({"a": 0.5, "b": float("nan")}, "'b'.*finite"),
])
def test_random_refuses_missing_or_bad_credibility(trust: dict[str, float], match: str) -> None:
    pool = [prof("a", "x"), prof("b", "y")]
    with pytest.raises(ValueError, match=match):
        RandomScheduler().choose(pool, [], 1, trust, random.Random(0))


def test_round_robin_gives_everyone_a_turn() -> None:
    pool = [prof(f"e{i}", f"c{i}") for i in range(5)]
    s = RoundRobinScheduler()
    rng = random.Random(0)
    active = s.choose(pool, [], 3, {}, rng)
    assert active == ["e0", "e1", "e2"]
    served = set(active)
    for _ in range(4):
        by_name = {p.name: p for p in pool}
        (out,) = s.retire([by_name[n] for n in active], 1, {}, rng)
        spares = [p for p in pool if p.name not in active]
        (new,) = s.choose(spares, [by_name[n] for n in active if n != out], 1, {}, rng)
        assert out == active[0]  # the longest-serving leaves
        active = [*active[1:], new]
        served.add(new)
    assert served == {p.name for p in pool}


# -- max-dissimilarity -----------------------------------------------------------------------


def test_max_dissimilarity_avoids_the_shared_server() -> None:
    keep = [prof("nginx-debian", "os:debian", "srv:nginx")]
    candidates = [
        prof("nginx-alpine", "os:alpine", "srv:nginx"),
        prof("httpd-fedora", "os:fedora", "srv:httpd"),
        prof("lighttpd-bsd", "os:freebsd", "srv:lighttpd"),
        prof("nginx-fedora", "os:fedora", "srv:nginx"),
    ]
    chosen = MaxDissimilarityScheduler().choose(candidates, keep, 2, {}, random.Random(1))
    assert sorted(chosen) == ["httpd-fedora", "lighttpd-bsd"]


def test_max_dissimilarity_retires_a_twin() -> None:
    active = [prof("a", "os:x", "srv:1"), prof("b", "os:x", "srv:1"), prof("c", "os:y", "srv:2")]
    (out,) = MaxDissimilarityScheduler().retire(active, 1, {}, random.Random(0))
    assert out in {"a", "b"}


def test_ties_are_broken_by_the_generator() -> None:
    candidates = [prof(f"e{i}", f"c{i}") for i in range(8)]
    s = MaxDissimilarityScheduler()
    picks = {tuple(s.choose(candidates, [], 2, {}, random.Random(seed))) for seed in range(20)}
    assert len(picks) > 1


@settings(max_examples=150)
@given(pool=pools, data=st.data(), seed=st.integers(0, 2**32))
def test_max_dissimilarity_is_optimal_on_small_pools(pool, data, seed) -> None:
    split = data.draw(st.integers(0, len(pool)))
    keep, candidates = pool[:split], pool[split:]
    count = data.draw(st.integers(0, len(candidates)))
    chosen = MaxDissimilarityScheduler().choose(candidates, keep, count, {},
                                                random.Random(seed))
    by_name = {p.name: p for p in candidates}
    got = [*keep, *(by_name[n] for n in chosen)]
    options = [[*keep, *c] for c in combinations(candidates, count)]
    best_shared = min(majority_shared(o) for o in options)
    # never a component shared by a majority when some choice avoids it
    assert majority_shared(got) == best_shared
    best_spread = max(pair_sum(o) for o in options if majority_shared(o) == best_shared)
    assert pair_sum(got) == pytest.approx(best_spread)


def test_majority_shared_counts_only_real_sharing() -> None:
    assert majority_shared([prof("a", "x", "y")]) == 0  # alone, nothing is shared
    assert majority_shared([prof("a", "x"), prof("b", "x")]) == 1
    three = [prof("a", "x"), prof("b", "x"), prof("c", "y")]
    assert majority_shared(three) == 1
    assert majority_shared([*three, prof("d", "y")]) == 0  # two of four is not a majority


def test_large_pools_fall_back_to_greedy_and_still_avoid_common_mode() -> None:
    # 30 candidates choose 5 is far past the exhaustive limit
    candidates = [prof(f"nginx{i}", "srv:nginx", f"os:{i}") for i in range(26)]
    candidates += [prof(f"other{i}", f"srv:other{i}", f"os:o{i}") for i in range(4)]
    keep = [prof("k", "srv:nginx", "os:k")]
    chosen = MaxDissimilarityScheduler().choose(candidates, keep, 5, {}, random.Random(3))
    by_name = {p.name: p for p in candidates}
    assert majority_shared([*keep, *(by_name[n] for n in chosen)]) == 0
    assert chosen == MaxDissimilarityScheduler().choose(candidates, keep, 5, {},
                                                        random.Random(3))


# -- credibility-weighted ----------------------------------------------------------------------


def test_credibility_prefers_the_trusted_when_all_differ() -> None:
    candidates = [prof(f"e{i}", f"c{i}") for i in range(5)]
    trust = {"e0": 0.2, "e1": 0.9, "e2": 0.5, "e3": 0.95, "e4": 0.1}
    chosen = CredibilityWeightedScheduler().choose(candidates, [], 2, trust, random.Random(0))
    assert sorted(chosen) == ["e1", "e3"]


def test_credibility_still_avoids_common_mode() -> None:
    keep = [prof("k", "srv:nginx")]
    candidates = [prof("trusted-twin", "srv:nginx"), prof("other", "srv:httpd")]
    trust = {"k": 1.0, "trusted-twin": 1.0, "other": 0.3}
    chosen = CredibilityWeightedScheduler().choose(candidates, keep, 1, trust, random.Random(0))
    assert chosen == ["other"]


def test_credibility_retires_the_least_credible() -> None:
    active = [prof(f"e{i}", f"c{i}") for i in range(4)]
    trust = {"e0": 0.9, "e1": 0.05, "e2": 0.8, "e3": 0.7}
    assert CredibilityWeightedScheduler().retire(active, 1, trust, random.Random(0)) == ["e1"]


def test_credibility_reads_points_from_the_trust_book() -> None:
    """At equal distances, the executors with the longer record of agreement join, and the one
    with the shortest is retired."""
    pool = [prof(f"e{i}", f"c{i}") for i in range(4)]
    book = TrustBook([p.name for p in pool])
    for i, p in enumerate(pool):
        book.record_agreements(p.name, 100 * i)
    trust = book.snapshot()
    s = CredibilityWeightedScheduler()
    assert sorted(s.choose(pool, [], 2, trust, random.Random(0))) == ["e2", "e3"]
    assert s.retire(pool, 1, trust, random.Random(0)) == ["e0"]


def test_credibility_needs_every_trust_score() -> None:
    pool = [prof("a", "x"), prof("b", "y")]
    with pytest.raises(ValueError, match="'b'"):
        CredibilityWeightedScheduler().choose(pool, [], 1, {"a": 1.0}, random.Random(0))
