"""Immune memory's trusted parts: the features (native against the reference), signatures,
memories and their decay, and how memories and antigens cross the cluster store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec import _native
from endosec.cluster.control import ControlError, ControlView, decode_report, encode_report
from endosec.core.antigen import fnv1a, query_features, request_features
from endosec.core.immune import Antigen, ImmuneMemory, ImmunePolicy, Matched, Memory, signature
from endosec.core.model import ExecutorState
from endosec.immune.detector import score

_PIECES = st.sampled_from(["notes", "12", "%41", "%2", "%zz", "+", "a b", "é", "x_Y", "..",
                           "letmein", "007", "%2F", "=", "&", "%25", "Z" * 40, "q1w2"])
_TEXT = st.lists(_PIECES, max_size=8).map("".join)
_HEADER = st.tuples(st.sampled_from(["Host", "Cookie", "content-length", "X-Debug", "Accept",
                                     "X-Endosec-Time", "X-endosec-verdict", "User-Agent",
                                     "Authorization", "X-A"]), _TEXT)


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
       path=st.lists(_TEXT, max_size=4).map(lambda s: "/" + "/".join(s)),
       query=st.none() | st.lists(st.tuples(_TEXT, st.none() | _TEXT), max_size=5),
       headers=st.lists(_HEADER, max_size=6),
       body=st.binary(max_size=64) | _TEXT.map(lambda t: (t * 300).encode()))
def test_the_data_plane_computes_the_reference_features(method, path, query, headers, body):
    target = path
    if query is not None:
        target += "?" + "&".join(n if v is None else f"{n}={v}" for n, v in query)
    wire = [(n.encode(), v.encode()) for n, v in headers]
    expected = request_features(method.encode(), target.encode(), wire, body)
    assert _native.request_features(method.encode(), target.encode(), wire, body) == expected
    assert expected == sorted(set(expected)) and all(0 <= f < 2**64 for f in expected)


@settings(max_examples=300, deadline=None)
@given(weights=st.lists(st.floats(-50, 50), min_size=1, max_size=40),
       bias=st.floats(-50, 50), features=st.lists(st.integers(0, 2**64 - 1), max_size=30))
def test_the_data_plane_scores_as_the_reference_detector(weights, bias, features):
    params = np.array([*weights, bias])
    expected = score(params, features, len(weights))
    assert _native.detector_score(weights, bias, features) == expected


_MANY = "&".join(f"p{i}=tok{i}a tok{i}b" for i in range(50))


@pytest.mark.parametrize(("method", "target", "headers", "body"), [
    (b"GET", f"/a?{_MANY}".encode(), [], b""),  # past the 64 query tokens
    (b"get", b"/%", [(b"X-A", b" ".join(b"w%da" % i for i in range(100)))], b""),
    (b"POST", b"/a%4", [(b"\xff\xfe", b"\xc3\x28 caf\xc3\xa9")], b"\x00" * 5000),
    (b"PUT", b"/a%2x%41?%=%&&=&+a+=%2B", [(b"HOST", b"h"), (b"x-endosec-", b"v")], b"ab" * 3000),
    (b"GET", b"/" + b"9" * 40 + b"/ab1cd2" + b"x" * 33, [], b"a1 " + b"b" * 32 + b" " + b"c" * 33),
])
def test_edge_cases_give_the_same_features_natively(method, target, headers, body):
    expected = request_features(method, target, headers, body)
    assert _native.request_features(method, target, headers, body) == expected


@settings(max_examples=200, deadline=None)
@given(qtype=st.sampled_from(["A", "AAAA", "TXT", "TYPE65534"]),
       labels=st.lists(st.text("abcxyz0123456789-_é\\", min_size=1, max_size=12), max_size=5))
def test_the_data_plane_computes_the_reference_query_features(qtype, labels):
    name = ".".join(labels) + "."
    assert _native.query_features(qtype, name) == query_features(qtype, name)


def test_fnv1a_is_the_published_function():
    # FNV-1a 64 test vectors (the offset basis for the empty string, and "a").
    assert fnv1a(b"") == 0xCBF29CE484222325
    assert fnv1a(b"a") == 0xAF63DC4C8601EC8C


def test_a_trigger_is_recognised_in_another_guise():
    plain = request_features(b"GET", b"/notes/1", [(b"Host", b"h")], b"")
    first = request_features(b"GET", b"/notes/1", [(b"Host", b"h"), (b"X-Debug", b"letmein")],
                             b"")
    other = request_features(b"POST", b"/notes?page=2",
                             [(b"Host", b"h2"), (b"x-debug", b"LetMeIn"), (b"Accept", b"*/*")],
                             b'{"text": "hi"}')
    rare = set(first) - set(plain)
    assert len(rare) == 2 and rare <= set(other)


def _counts(features, common, sampled):
    return [sampled if f in common else 0 for f in features]


@settings(max_examples=200, deadline=None)
@given(features=st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=40).map(sorted),
       counts=st.lists(st.integers(0, 500), min_size=40, max_size=40),
       sampled=st.integers(0, 500), rare=st.floats(0, 0.5), most=st.integers(1, 20))
def test_a_signature_holds_only_rare_features(features, counts, sampled, rare, most):
    policy = ImmunePolicy(rare=rare, max_features=most, min_self=50)
    counts = counts[:len(features)]
    sig = signature(features, counts, sampled, policy)
    if sampled < 50:
        assert sig == ()
        return
    by = dict(zip(features, counts, strict=True))
    assert set(sig) <= set(features) and len(sig) <= most and list(sig) == sorted(sig)
    assert all(by[f] <= rare * sampled for f in sig)
    rare_ones = [f for f in features if by[f] <= rare * sampled]
    assert len(sig) == min(most, len(rare_ones))
    left_out = set(rare_ones) - set(sig)  # only commoner (or equally common) ones
    assert all(by[f] >= max(by[g] for g in sig) for f in left_out)


def test_memories_are_refreshed_matched_and_forgotten():
    policy = ImmunePolicy(match=0.5, decay=10.0, min_self=1)
    memory = ImmuneMemory(policy)
    features = [1, 2, 3, 4, 5]
    counts = _counts(features, common={1, 2}, sampled=100)
    m = memory.learn(features, counts, 100, ["a"], now=0.0)
    assert m is not None and m.features == (3, 4, 5) and m.need == math.ceil(1.5)
    again = memory.learn(features, counts, 100, ["b"], now=4.0)
    assert again is not None and again.id == m.id and again.implicated == ("a", "b")
    assert again.learned == 0.0 and again.seen == 4.0 and len(memory.memories) == 1
    assert memory.learn(features, _counts(features, set(features), 100), 100, ["a"], 5.0) is None
    assert memory.matched(m.id, 12.0) is not None
    assert memory.decay(21.9) == [] and m.id in memory.memories
    [gone] = memory.decay(22.0)
    assert gone.id == m.id and gone.matches == 1 and not memory.memories
    assert memory.matched(m.id, 23.0) is None


def test_the_least_recently_seen_memory_goes_first():
    memory = ImmuneMemory(ImmunePolicy(capacity=2, min_self=1))
    ids = [memory.learn([i], [0], 10, ["a"], now=float(i)).id for i in range(3)]
    memory.matched(ids[1], 5.0)
    memory.learn([9], [0], 10, ["a"], now=6.0)
    assert set(memory.memories) == {ids[1], memory.learn([9], [0], 10, [], 7.0).id}


@pytest.mark.parametrize("bad", [
    {"features": [1], "need": 2}, {"features": [], "need": 1}, {"features": [-1], "need": 1},
    {"features": [1], "need": 1, "response": "shrug"}, {"features": [1.5], "need": 1},
    {"features": [2**64], "need": 1}, {"features": [1], "need": True},
    {"features": [1], "need": 1, "seen": float("inf")}, {"features": [1], "need": 1e999},
    {"features": [1], "need": 1, "implicated": "a"}, {"features": [1], "need": 1, "id": 3}])
def test_a_bad_memory_record_is_refused(bad):
    record = {"id": "x", "learned": 0, "seen": 0, "response": "rotate", **bad}
    with pytest.raises(ValueError):
        Memory.from_record(record)


def test_antigens_matches_and_memories_cross_the_store():
    antigen = Antigen((1, 2**64 - 1), (0, 3), 40, ("a",), 9.0)
    assert decode_report(encode_report(antigen), 9.0) == antigen
    assert decode_report(encode_report(Matched("abc", 1.0, 7)), 2.0) == Matched("abc", 2.0, 7)
    with pytest.raises(ControlError):
        decode_report(b'{"kind":"antigen","features":[1],"counts":[],"sampled":1,'
                      b'"implicated":[]}', 0.0)
    memory = ImmuneMemory(ImmunePolicy(min_self=1))
    learned = memory.learn([5, 6], [0, 0], 10, ["a"], 1.0)
    assert learned is not None
    view = ControlView("g1", 1, 1, "", {"a": ExecutorState.ACTIVE}, ("a",), (), (), (), (),
                       {}, tuple(memory.records()))
    back = ControlView.decode(view.encode())
    assert back == view and back.memories[0]["id"] == learned.id
    for bad in (b'"need":9', b'"need":1e999', b'"learned":1e999'):
        with pytest.raises(ControlError):
            ControlView.decode(view.encode().replace(b'"need":1', bad)
                               .replace(b'"learned":1.0', bad))
