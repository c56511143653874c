"""Learned detectors: Eq. 1 and 2, verification, trust gating, sealing, ledger, store, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.cluster.store import ControlStore
from endosec.core.trust import Level
from endosec.immune.cli import immune
from endosec.immune.clonal import aggregate, eta, mutate, rank, run_clonal, select
from endosec.immune.detector import Fit, design, fit, from_bytes, to_bytes, zeros
from endosec.immune.exchange import RECORD_KIND, Exchange, record_round
from endosec.immune.experiment import POISONED, Split, split
from endosec.immune.federation import Client, Plan, run_fedavg
from endosec.immune.seal import (
    LevelKeys,
    SealError,
    open_aggregate,
    open_update,
    seal_aggregate,
    seal_update,
)
from endosec.immune.synthetic import FAMILIES, antigens, benign, mixed
from endosec.immune.traffic import TrafficError, dump_jsonl, parse_jsonl
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_verify import read_records, verify

vectors = st.lists(st.floats(-50, 50), min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(params=vectors, strength=st.floats(-10, 10), seed=st.integers(0, 2**32))
def test_eq1_adds_eta_times_one_cauchy_draw_per_parameter(params: list[float], strength: float,
                                                          seed: int) -> None:
    draws = np.random.default_rng(seed)
    expected = [p + strength * draws.standard_cauchy() for p in params]
    got = mutate(np.array(params), strength, np.random.default_rng(seed))
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(models=st.lists(st.lists(st.floats(-20, 20), min_size=3, max_size=3), max_size=5),
       seed=st.integers(0, 2**32))
def test_eq2_sums_every_ordered_pair_distance_over_n_times_one_signed_draw(
        models: list[list[float]], seed: int) -> None:
    draws = np.random.default_rng(seed)
    sign = draws.random() * 2 - 1
    total = 0.0
    for a in models:
        for b in models:
            total += math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    expected = total / len(models) * sign if models else 0.0
    got = eta([np.array(m) for m in models], np.random.default_rng(seed))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_eq2_is_zero_for_identical_models_and_grows_with_their_distance() -> None:
    same = [np.ones(4)] * 3
    assert eta(same, np.random.default_rng(1)) == 0.0
    near = eta([np.zeros(4), np.full(4, 1.0)], np.random.default_rng(1))
    far = eta([np.zeros(4), np.full(4, 3.0)], np.random.default_rng(1))
    assert far == pytest.approx(3 * near)


def test_ranking_prefers_affinity_and_breaks_near_ties_by_diversity() -> None:
    assert rank([0.9, 0.8, 0.95], [0, 0, 0], 0.05) == [2, 0, 1]
    assert rank([0.9, 0.9], [1.0, 3.0], 0.05) == [1, 0]
    scores = {"a": 1.0, "b": -1.0, "c": 2.0}
    assert select(scores, ["a", "b", "c"], 2) == ["a", "c"]
    assert select(scores, ["a", "b", "c"], None) == ["a", "b", "c"]


@pytest.fixture(scope="module")
def federation() -> Split:
    rng = np.random.default_rng(7)
    return split(mixed(rng, 60, 500), rng, dim=256, poisoned=True)


def test_verification_rejects_the_poisoned_update_before_aggregation(federation: Split) -> None:
    # Honest updates forget some of what the others taught (non-IID): a wide margin lets
    # them through, and the flipped labels still fall far below it.
    plan = Plan(rounds=6, margin=0.2)
    base = run_fedavg([c for c in federation.clients if c.name != POISONED],
                      federation.check, plan).models
    model = next(iter(base.values()))
    baseline = federation.check.accuracy(model)
    updates = {c.name: fit(model, c.x, c.y, plan.fit) for c in federation.clients}
    step = aggregate(updates, federation.check, baseline, plan, np.random.default_rng(0))
    assert POISONED not in step.passed and POISONED not in step.top
    assert step.affinity[POISONED] < baseline - plan.margin
    honest = [n for n in updates if n != POISONED]
    assert set(step.passed) == set(honest)
    unverified = aggregate(updates, federation.check, baseline,
                           dataclasses.replace(plan, verify=False), np.random.default_rng(0))
    assert POISONED in unverified.top


def test_an_aggregate_that_loses_accuracy_is_not_kept(federation: Split) -> None:
    plan = Plan(margin=0.0)
    noise = {c.name: np.random.default_rng(1).standard_normal(257) * 50
             for c in federation.clients}
    step = aggregate(noise, federation.check, 1.0, dataclasses.replace(plan, verify=False),
                     np.random.default_rng(0))
    assert step.score < 1.0
    assert not aggregate(noise, federation.check, step.score + 0.01, plan,
                         np.random.default_rng(0)).kept


def test_algorithm_1_excludes_the_poisoned_client_every_round(federation: Split) -> None:
    run = run_clonal(federation.clients, federation.check, Plan(rounds=6),
                     np.random.default_rng(3))
    assert all(POISONED in r.rejected for r in run.rounds)
    assert POISONED in run.excluded
    again = run_clonal(federation.clients, federation.check, Plan(rounds=6),
                       np.random.default_rng(3))
    assert [r.digest for r in again.rounds] == [r.digest for r in run.rounds]


def test_trust_selection_stops_sending_to_a_client_that_keeps_failing(federation: Split) -> None:
    run = run_clonal(federation.clients, federation.check,
                     Plan(rounds=4, select=len(federation.clients) - 1),
                     np.random.default_rng(3))
    assert POISONED in run.rounds[0].rejected
    for r in run.rounds[1:]:
        assert POISONED not in r.rejected + r.accepted


def test_only_clients_at_the_required_level_take_part(federation: Split) -> None:
    low = federation.clients[0]
    clients = [dataclasses.replace(low, level=Level.L1), *federation.clients[1:]]
    run = run_clonal(clients, federation.check, Plan(rounds=2, min_level=Level.L2),
                     np.random.default_rng(0))
    assert low.name not in run.models
    assert all(low.name not in r.accepted + r.rejected for r in run.rounds)
    assert low.name in run_clonal(clients, federation.check, Plan(rounds=2, min_level=Level.L1),
                                  np.random.default_rng(0)).models
    with pytest.raises(ValueError, match="L3"):
        run_fedavg(clients, federation.check, Plan(min_level=Level.L3))


def test_the_aggregate_opens_only_at_or_above_its_level() -> None:
    keys = LevelKeys.generate()
    sealed = seal_aggregate(keys, Level.L2, 4, b"model")
    assert open_aggregate(keys.granted(Level.L3), 4, sealed) == b"model"
    assert open_aggregate(keys.granted(Level.L2), 4, sealed) == b"model"
    with pytest.raises(SealError, match="L2"):
        open_aggregate(keys.granted(Level.L1), 4, sealed)
    with pytest.raises(SealError):
        open_aggregate(keys.granted(Level.L3), 5, sealed)
    with pytest.raises(SealError):
        open_aggregate(LevelKeys.generate(), 4, sealed)


_server, _client = X25519PrivateKey.generate(), X25519PrivateKey.generate()


@settings(max_examples=40, deadline=None)
@given(model=st.binary(min_size=0, max_size=200), flip=st.integers(0, 10_000),
       bit=st.integers(0, 7))
def test_an_update_round_trips_and_any_changed_bit_is_refused(model: bytes, flip: int,
                                                              bit: int) -> None:
    sealed = seal_update(_client, _server.public_key(), "gw-a", 3, model)
    assert open_update(_server, _client.public_key(), "gw-a", 3, sealed) == model
    assert model not in sealed or len(model) < 8
    changed = bytearray(sealed)
    changed[flip % len(sealed)] ^= 1 << bit
    with pytest.raises(SealError):
        open_update(_server, _client.public_key(), "gw-a", 3, bytes(changed))


def test_an_update_is_bound_to_its_sender_and_round() -> None:
    sealed = seal_update(_client, _server.public_key(), "gw-a", 3, b"weights")
    other = X25519PrivateKey.generate()
    for name, number, key in (("gw-b", 3, _client), ("gw-a", 4, _client), ("gw-a", 3, other)):
        with pytest.raises(SealError):
            open_update(_server, key.public_key(), name, number, sealed)


def test_each_round_is_in_the_ledger_by_the_hash_of_its_aggregate(tmp_path: Path,
                                                                  federation: Split) -> None:
    run = run_clonal(federation.clients, federation.check, Plan(rounds=3),
                     np.random.default_rng(5))
    with Ledger(tmp_path / "ledger") as ledger:
        for outcome in run.rounds:
            record_round(ledger, run.scheme, outcome, now=1000.0 + outcome.number)
    records = [e.record for e in read_records(tmp_path / "ledger") if e.record is not None]
    mine = [r for r in records if r.kind == RECORD_KIND]
    assert [r.payload["round"] for r in mine] == [1, 2, 3]
    final = next(iter(run.models.values()))
    assert mine[-1].payload["aggregate_sha256"] == hashlib.sha256(
        final.astype("<f8").tobytes()).hexdigest()
    assert [r.payload["eta"] for r in mine] == [r.eta for r in run.rounds]
    assert verify(tmp_path / "ledger").ok



async def test_gateways_exchange_sealed_models_through_the_store(store: ControlStore) -> None:
    exchange = Exchange(store, "shop")
    server = X25519PrivateKey.generate()
    keys = {n: X25519PrivateKey.generate() for n in ("gw-a", "gw-b", "gw-c")}
    models = {n: np.arange(5.0) * i for i, n in enumerate(keys, 1)}
    for name in ("gw-a", "gw-b"):
        await exchange.publish_update(name, keys[name], server.public_key(), 2, models[name])
    await exchange.publish_update("gw-a", keys["gw-a"], server.public_key(), 1, zeros(4))
    forged = X25519PrivateKey.generate()  # gw-c's name, another key
    await exchange.publish_update("gw-c", forged, server.public_key(), 2, models["gw-c"])
    got = await exchange.collect(2, server, {n: k.public_key() for n, k in keys.items()})
    assert set(got.models) == {"gw-a", "gw-b"} and got.refused == ("gw-c",)
    for name, model in got.models.items():
        assert np.array_equal(model, models[name])
    levels = LevelKeys.generate()
    mean = np.mean(list(got.models.values()), axis=0)
    await exchange.publish_aggregate(2, seal_aggregate(levels, Level.L2, 2, to_bytes(mean)))
    sealed = await exchange.aggregate(2)
    assert sealed is not None and await exchange.aggregate(3) is None
    assert np.array_equal(from_bytes(open_aggregate(levels.granted(Level.L2), 2, sealed)), mean)
    assert (await store.get(b"/endosec/shop/immune/updates/gw-a/0000000002")) is not None
    with pytest.raises(ValueError):
        exchange.update_key("../x", 1)


def test_traffic_files_round_trip_and_name_the_bad_line() -> None:
    rng = np.random.default_rng(2)
    rows = benign(rng, 5) + antigens(rng, "object-gadget", 3)
    again = parse_jsonl(dump_jsonl(rows).splitlines())
    assert again == rows
    assert [r.features() for r in again] == [r.features() for r in rows]
    with pytest.raises(TrafficError, match=r"t\.jsonl:2: 'label'"):
        parse_jsonl(['{"method": "GET", "target": "/", "label": 0}',
                     '{"method": "GET", "target": "/", "label": 2}'], "t.jsonl")


def test_synthetic_families_differ_from_each_other_and_from_self() -> None:
    rng = np.random.default_rng(4)
    own = {f: set().union(*(r.features() for r in antigens(rng, f, 30))) for f in FAMILIES}
    selves = set().union(*(r.features() for r in benign(rng, 300)))
    for family, features in own.items():
        assert features - selves, family
        for other in FAMILIES:
            if other != family:
                assert (features - selves) - own[other], (family, other)


def test_a_detector_learns_its_family_but_not_an_unseen_one() -> None:
    rng = np.random.default_rng(9)
    train = benign(rng, 200) + antigens(rng, "sql-injection", 200)
    x = design((r.features() for r in train), 512)
    y = np.array([r.label for r in train], dtype=np.float64)
    model = fit(zeros(512), x, y, Fit(60, 1.0, 0.001))
    seen = design((r.features() for r in antigens(rng, "sql-injection", 50)), 512)
    unseen = design((r.features() for r in antigens(rng, "header-trigger", 50)), 512)
    assert (seen @ model[:-1] + model[-1] > 0).mean() > 0.9
    assert (unseen @ model[:-1] + model[-1] > 0).mean() < 0.5


def test_the_cli_trains_and_reports_every_scheme(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "traffic.jsonl"
    data.write_text(dump_jsonl(mixed(rng, 40, 300)))
    result = CliRunner().invoke(immune, ["train", "--traffic", str(data), "--rounds", "4",
                                         "--dim", "256", "--poison", "--json",
                                         "--ledger", str(tmp_path / "ledger")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [s["scheme"] for s in out["schemes"]] == ["local", "fedavg", "clonal"]
    assert POISONED in out["clients"]
    clonal = out["schemes"][2]
    assert len(clonal["rounds"]) == 4 and POISONED in clonal["excluded"]
    for s in out["schemes"]:
        assert 0 <= s["false_positive"] <= 1 and 0 <= s["unseen"] <= 1
    kinds = [e.record.kind for e in read_records(tmp_path / "ledger") if e.record]
    assert kinds.count(RECORD_KIND) == 8
    table = CliRunner().invoke(immune, ["train", "--traffic", str(data), "--rounds", "2",
                                        "--dim", "128", "--scheme", "local"])
    assert table.exit_code == 0 and "local" in table.output and "clonal" not in table.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"method": "GET"}\n')
    refused = CliRunner().invoke(immune, ["train", "--traffic", str(bad)])
    assert refused.exit_code != 0 and "bad.jsonl:1" in refused.output


def test_client_shapes_follow_the_split(federation: Split) -> None:
    assert all(isinstance(c, Client) and c.dim == 256 for c in federation.clients)
    assert {c.name for c in federation.clients} == {f"gw-{f}" for f in FAMILIES} | {POISONED}
