from __future__ import annotations

import random
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


def test_credibility_needs_every_trust_score() -> None:
    pool = [prof("a", "x"), prof("b", "y")]
    with pytest.raises(ValueError, match="'b'"):
        CredibilityWeightedScheduler().choose(pool, [], 1, {"a": 1.0}, random.Random(0))
