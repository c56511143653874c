from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.core.model import Profile
from endosec.quantify.components import ComponentSystem, analyse
from endosec.quantify.config import read_config
from endosec.quantify.errors import ParameterError


def P(name: str, *components: str) -> Profile:
    return Profile(name, frozenset(components))


def brute_force(profiles: list[Profile], p: dict[str, float], k: int) -> float:
    """Enumerate every exploited/not-exploited pattern of every component."""
    comps = sorted(set().union(*(pr.components for pr in profiles)))
    total = 0.0
    for pattern in itertools.product((False, True), repeat=len(comps)):
        weight = 1.0
        hit = set()
        for c, on in zip(comps, pattern, strict=True):
            weight *= p[c] if on else 1 - p[c]
            if on:
                hit.add(c)
        if sum(1 for pr in profiles if pr.components & hit) >= k:
            total += weight
    return total


WEB = [P("a", "os:debian12", "server:nginx", "lang:py"),
       P("b", "os:debian12", "server:httpd", "lang:go"),
       P("c", "os:alpine", "server:lighttpd", "lang:py")]
PROBS = {"os:debian12": 0.05, "server:nginx": 0.02, "lang:py": 0.03, "server:httpd": 0.01,
         "lang:go": 0.04, "os:alpine": 0.02, "server:lighttpd": 0.06}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exact_matches_brute_force(k: int) -> None:
    result = analyse(ComponentSystem(WEB, PROBS), k=k)
    assert result.method == "exact" and result.ci is None
    assert result.p_defeat == pytest.approx(brute_force(WEB, PROBS, k), rel=1e-10)


def test_contributions_rank_the_shared_components() -> None:
    result = analyse(ComponentSystem(WEB, PROBS))
    names = [c.component for c in result.contributions]
    assert names == ["os:debian12", "lang:py"]  # the only shared ones, larger risk first
    top = result.contributions[0]
    assert top.executors == ("a", "b")
    assert top.p_defeat_if_exploited == pytest.approx(1.0)  # a and b fall together
    without = dict(PROBS, **{"os:debian12": 0.0})
    assert top.p_defeat_without == pytest.approx(brute_force(WEB, without, 2))
    assert top.contribution == pytest.approx(result.p_defeat - top.p_defeat_without)
    assert 0 < top.share <= 1


def test_monte_carlo_agrees_with_exact_within_its_interval() -> None:
    system = ComponentSystem(WEB, PROBS)
    exact = analyse(system).p_defeat
    mc = analyse(system, method="monte-carlo", trials=100_000, seed=7)
    assert mc.ci is not None and mc.trials == 100_000
    low, high = mc.ci
    width = high - low
    assert low - width < exact < high + width  # about 4 standard errors either side
    exact_top = analyse(system).contributions[0]
    mc_top = mc.contributions[0]
    assert mc_top.component == exact_top.component
    assert mc_top.contribution == pytest.approx(exact_top.contribution, abs=2 * width)


def test_large_configuration_falls_back_to_monte_carlo() -> None:
    # a ring: executor i shares one component with each neighbour, 12 distinct shared groups
    pool = [P(f"e{i}", f"own{i}", f"s{i}", f"s{(i + 1) % 12}") for i in range(12)]
    result = analyse(ComponentSystem(pool, default_p=0.02), trials=20_000, seed=1, exact_limit=8)
    assert result.method == "monte-carlo" and result.ci is not None
    assert result.ci[0] <= result.p_defeat <= result.ci[1]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sets(st.sampled_from("abcdef"), min_size=1, max_size=3), min_size=1,
                max_size=5),
       st.lists(st.floats(0, 1), min_size=6, max_size=6), st.data())
def test_exact_matches_brute_force_on_random_pools(profiles: list[set[str]], ps: list[float],
                                                   data: st.DataObject) -> None:
    pool = [P(f"e{i}", *comps) for i, comps in enumerate(profiles)]
    probs = dict(zip("abcdef", ps, strict=True))
    k = data.draw(st.integers(1, len(pool)))
    got = analyse(ComponentSystem(pool, probs), k=k).p_defeat
    assert got == pytest.approx(brute_force(pool, probs, k), abs=1e-12)


def test_component_system_checks() -> None:
    with pytest.raises(ParameterError):
        ComponentSystem([])
    with pytest.raises(ParameterError):
        ComponentSystem([P("a", "x"), P("a", "y")])
    with pytest.raises(ParameterError, match="os"):
        ComponentSystem([P("a", "os")], {"os": 2.0})
    with pytest.raises(ParameterError, match="k must"):
        analyse(ComponentSystem(WEB), k=4)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "endosec.yaml"
    path.write_text(text)
    return path


def test_read_config(tmp_path: Path) -> None:
    path = write(tmp_path, """
listen: 127.0.0.1:8080
controller: {active: 2}
executors:
  - name: a
    profile: ["os:debian12", "server:nginx-1.22"]
    argv: ["python", "a.py", "{port}"]
  - name: b
    profile: ["os:debian12"]
    argv: ["python", "b.py", "{port}"]
quantify:
  components: {"os:debian12": 0.2}
  default_p: 0.001
""")
    cfg = read_config(path)
    assert [p.name for p in cfg.profiles] == ["a", "b"]
    assert cfg.profiles[0].components == {"os:debian12", "server:nginx-1.22"}
    assert cfg.components == {"os:debian12": 0.2}
    assert cfg.default_p == 0.001


A = "  - name: a\n    argv: [x, '{port}']\n    profile: [x]\n"


@pytest.mark.parametrize(("text", "field"), [
    ("executors: []", "executors"),
    ("- 1", "top level"),
    ("executors:\n  - profile: [x]\n    argv: [x]", "executors[0].name"),
    ("executors:\n  - name: a\n    argv: [x]\n    profile: x", "executors[0].profile"),
    ("controller: {active: 1}\nexecutors:\n" + A + A, "repeated: a"),
    ("controller: {active: 1}\nexecutors:\n" + A + "quantify:\n  components: {x: 3}",
     "quantify.components"),
    ("controller: {active: 1}\nexecutors:\n" + A + "quantify:\n  default_p: 7",
     "quantify.default_p"),
    ("controller: {active: 1}\nexecutors:\n" + A + "quantify:\n  defualt_p: 0.1",
     "did you mean `default_p`"),
    ("executors: [", "YAML"),
])
def test_config_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ParameterError, match=field.replace("[", r"\[").replace("]", r"\]")):
        read_config(write(tmp_path, text))


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="cannot read"):
        read_config(tmp_path / "nope.yaml")
