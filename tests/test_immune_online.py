"""Online learning: gateways of one boundary learn from each other through the store."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.cluster.embedded import EmbeddedStore
from endosec.cluster.store import ControlStore
from endosec.core.trust import Level
from endosec.immune.detector import Fit, Vector, design, score, to_bytes
from endosec.immune.exchange import RECORD_KIND, Exchange
from endosec.immune.online import Learner, LearnPolicy
from endosec.immune.synthetic import antigens, benign
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_verify import read_records

# Non-IID: each gateway sees one family. A wide margin lets honest updates that forget some
# of the others' families through (docs/immune.md, "Verification"); 0.5 is `flagged`'s line.
POLICY = LearnPolicy(dim=256, margin=0.2, threshold=0.5, fit=Fit(10, 1.0, 0.001))
FAMILY = {"gw-a": "header-trigger", "gw-b": "command-injection", "gw-c": "path-traversal"}
LEVELS = {"gw-a": Level.L3, "gw-b": Level.L2, "gw-c": Level.L1}

Traffic = tuple[list[list[int]], list[list[int]]]


def _traffic(rng: np.random.Generator, family: str, count: int = 40, selves: int = 60) -> Traffic:
    return ([r.features() for r in antigens(rng, family, count)],
            [r.features() for r in benign(rng, selves)])


def _detects(model: Vector | None, rows: list[list[int]]) -> float:
    assert model is not None
    return float(np.mean([score(model, f, POLICY.dim) > POLICY.threshold for f in rows]))


def _learners(store: ControlStore, names: list[str], policy: LearnPolicy = POLICY,
              ledger: Ledger | None = None) -> dict[str, Learner]:
    return {n: Learner(store, "shop", n, X25519PrivateKey.generate(), policy,
                       np.random.default_rng(i), ledger if i == 0 else None)
            for i, n in enumerate(names)}


async def _round(learners: dict[str, Learner], number: int, traffic: dict[str, Traffic],
                 levels: dict[str, Level]) -> None:
    for name, learner in learners.items():
        assert await learner.contribute(number, *traffic[name])
    leader = next(iter(learners))
    outcome = await learners[leader].aggregate(number, levels, *traffic[leader])
    assert outcome is not None
    for learner in learners.values():
        await learner.adopt(number)



async def test_a_gateway_learns_a_family_it_never_saw(store: ControlStore,
                                                      tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    test = {f: _traffic(rng, f, 50, 0)[0] for f in FAMILY.values()}
    clean = _traffic(rng, "header-trigger", 0, 200)[1]
    with Ledger(tmp_path / "ledger") as ledger:
        gw = _learners(store, list(FAMILY), ledger=ledger)
        for learner in gw.values():
            await learner.announce()
        traffic = {n: _traffic(rng, f) for n, f in FAMILY.items()}
        assert not await gw["gw-b"].contribute(1, *traffic["gw-b"])  # no server key yet
        assert await gw["gw-a"].aggregate(0, LEVELS, *traffic["gw-a"]) is None  # nothing sent
        assert not await gw["gw-b"].contribute(1, traffic["gw-b"][0][:4], traffic["gw-b"][1])
        assert await gw["gw-a"].contribute(1, *traffic["gw-a"])
        assert await gw["gw-c"].contribute(1, *traffic["gw-c"])  # sent, but below L2
        first = await gw["gw-a"].aggregate(1, LEVELS, *traffic["gw-a"])
        assert first is not None and first.accepted == ("gw-a",) and first.rejected == ()
        adopted = {1: await gw["gw-b"].adopt(1)}
        assert await gw["gw-a"].adopt(1) is not None and await gw["gw-c"].adopt(1) is None
        assert adopted[1] is not None and np.array_equal(adopted[1], gw["gw-a"].model)
        before = _detects(gw["gw-a"].model, test["command-injection"])
        assert before < 0.1
        for number in range(2, 7):
            traffic = {n: _traffic(rng, f) for n, f in FAMILY.items()}
            await _round(gw, number, traffic, LEVELS)
            adopted[number] = gw["gw-b"].model
        assert _detects(gw["gw-a"].model, test["command-injection"]) >= 0.8  # herd immunity
        assert _detects(gw["gw-b"].model, test["header-trigger"]) >= 0.8
        assert _detects(gw["gw-a"].model, test["path-traversal"]) <= 0.1  # gw-c not aggregated
        assert _detects(gw["gw-a"].model, clean) <= 0.05
        assert gw["gw-c"].model is None
        for number in range(1, 7):  # the store keeps the last two aggregates, no update
            sealed = await Exchange(store, "shop").aggregate(number)
            if number < 5:
                assert sealed is None
            else:
                assert sealed is not None and "gw-c" not in json.loads(sealed)["keys"]
        assert not await store.prefix(Exchange(store, "shop").top + b"updates/")
    records = [e.record for e in read_records(tmp_path / "ledger")
               if e.record is not None and e.record.kind == RECORD_KIND]
    assert [r.payload["round"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert "gw-c" not in r.payload["accepted"] + r.payload["rejected"]
        model = adopted[r.payload["round"]]
        assert model is not None
        assert r.payload["aggregate_sha256"] == hashlib.sha256(to_bytes(model)).hexdigest()


async def test_fedavg_with_every_gateway_eligible_learns_every_family(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    store = EmbeddedStore(tmp_path / "control.json")
    gw = _learners(store, list(FAMILY), dataclasses.replace(POLICY, scheme="fedavg"))
    levels = dict.fromkeys(FAMILY, Level.L2)
    for learner in gw.values():
        await learner.announce()
    assert await gw["gw-a"].aggregate(0, levels, *_traffic(rng, "header-trigger")) is None
    for number in range(1, 6):
        await _round(gw, number, {n: _traffic(rng, f) for n, f in FAMILY.items()}, levels)
    test = _traffic(rng, "path-traversal", 50, 0)[0]
    assert _detects(gw["gw-a"].model, test) >= 0.8  # gw-c's family, now that it is eligible
    assert gw["gw-c"].model is not None and gw["gw-a"].eta == 1.0
    await store.close()


@pytest.mark.parametrize("margin", [0.1, 1.0])
async def test_a_poisoned_gateway_is_rejected_by_verification(tmp_path: Path,
                                                              margin: float) -> None:
    rng = np.random.default_rng(13)
    store = EmbeddedStore(tmp_path / "control.json")
    gw = _learners(store, ["gw-a", "gw-b", "gw-p"], dataclasses.replace(POLICY, margin=margin))
    levels = dict.fromkeys(gw, Level.L2)
    for learner in gw.values():
        await learner.announce()
    assert await gw["gw-a"].aggregate(0, levels, [], _traffic(rng, "header-trigger")[1]) is None
    for number in range(1, 4):
        traffic = {"gw-a": _traffic(rng, "header-trigger"),
                   "gw-b": _traffic(rng, "command-injection")}
        wrong, right = _traffic(rng, "sql-injection", 60, 60)
        assert await gw["gw-p"].contribute(number, right, wrong)  # every label flipped
        for name in ("gw-a", "gw-b"):
            assert await gw[name].contribute(number, *traffic[name])
        outcome = await gw["gw-a"].aggregate(number, levels, *traffic["gw-a"])
        assert outcome is not None
        if margin < 1:
            assert outcome.rejected == ("gw-p",) and "gw-p" not in outcome.aggregated
            assert outcome.accepted == ("gw-a", "gw-b")
        else:  # a margin of 1 verifies nothing: the same update is then averaged in
            assert "gw-p" in outcome.aggregated
    await store.close()


async def test_a_tampered_update_or_aggregate_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    store = EmbeddedStore(tmp_path / "control.json")
    gw = _learners(store, ["gw-a", "gw-b", "gw-c"])
    levels = dict.fromkeys(gw, Level.L2)
    exchange = Exchange(store, "shop")
    for learner in gw.values():
        await learner.announce()
    traffic = {n: _traffic(rng, FAMILY[n]) for n in gw}
    await gw["gw-a"].aggregate(0, levels, *traffic["gw-a"])
    for name in gw:
        assert await gw[name].contribute(1, *traffic[name])
    item = await store.get(exchange.update_key("gw-b", 1))
    assert item is not None
    await store.put(item.key, item.value[:-1] + bytes([item.value[-1] ^ 1]))
    outcome = await gw["gw-a"].aggregate(1, levels, *traffic["gw-a"])
    assert outcome is not None
    assert outcome.accepted == ("gw-a", "gw-c") and outcome.rejected == ("gw-b",)
    sealed = await exchange.aggregate(1)
    assert sealed is not None
    data = json.loads(sealed)
    body, wrapped = (base64.b64decode(v) for v in (data["body"], data["keys"]["gw-b"]))
    wrapped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    for change in ({"eta": data["eta"] + 1}, {"round": 2}, {"leader": "gw-c"},
                   {"body": base64.b64encode(bytes([body[0] ^ 1]) + body[1:]).decode()},
                   {"keys": {"gw-b": base64.b64encode(wrapped).decode()}}):
        await exchange.publish_aggregate(1, json.dumps({**data, **change}).encode())
        assert await gw["gw-b"].adopt(1) is None
    assert gw["gw-b"].model is None
    await exchange.publish_aggregate(1, sealed)
    assert await gw["gw-b"].adopt(1) is not None


async def test_a_new_leader_takes_over_the_server_key(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    store = EmbeddedStore(tmp_path / "control.json")
    gw = _learners(store, ["gw-a", "gw-b"])
    levels = dict.fromkeys(gw, Level.L2)
    traffic = {n: _traffic(rng, FAMILY[n]) for n in gw}
    await gw["gw-a"].aggregate(0, levels, *traffic["gw-a"])
    assert await gw["gw-a"].contribute(1, *traffic["gw-a"])  # sealed for gw-a as the server
    # gw-b now leads; gw-a's update was sealed for the old server, and does not open
    assert await gw["gw-b"].aggregate(1, levels, *traffic["gw-b"]) is None
    for name in gw:
        assert await gw[name].contribute(2, *traffic[name])
    outcome = await gw["gw-b"].aggregate(2, levels, *traffic["gw-b"])
    assert outcome is not None and outcome.accepted == ("gw-a", "gw-b")
    assert np.array_equal(await gw["gw-a"].adopt(2), gw["gw-b"].model)


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 64), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1, 1e3]),
       features=st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_score_is_one_row_of_design_through_the_logistic(dim: int, seed: int, scale: float,
                                                         features: list[int]) -> None:
    params = np.random.default_rng(seed).standard_normal(dim + 1) * scale
    features = features + features[:3]  # repeats count once
    logit = float(design([features], dim)[0] @ params[:-1] + params[-1])
    expected = 1 / (1 + math.exp(-logit)) if logit > -700 else 0.0
    assert score(params, features, dim) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError):
        score(params[:-1], features, dim)


def test_a_policy_refuses_what_cannot_work() -> None:
    for bad in ({"dim": 0}, {"threshold": 1.0}, {"min_self": 0}, {"margin": 2.0},
                {"period": 0}, {"scheme": "other"}):
        with pytest.raises(ValueError):
            LearnPolicy(**bad)  # type: ignore[arg-type]
