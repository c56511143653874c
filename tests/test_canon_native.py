"""The native canonicaliser against the Python reference: same heads, keys, verdicts, digests
and configuration errors, for generated configurations and outputs."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endosec import _native
from endosec.core.canonicalise import RuleSet, compile_rules
from endosec.core.model import Canonicaliser, Output

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def reference(config: Any) -> RuleSet:
    with warnings.catch_warnings():  # a '[' inside a glob's class is only a FutureWarning
        warnings.simplefilter("ignore")
        return compile_rules(config)


def both(config: Any) -> tuple[RuleSet, _native.Rules]:
    text = json.dumps(config)
    return reference(json.loads(text)), _native.Rules(text)


def body_rule(rules: RuleSet, path: str, content_type: bytes, status: int) -> Canonicaliser:
    return rules.for_response(path, content_type.decode("latin-1"), status)


# --- configurations ----------------------------------------------------------------------------

CONFIG_NAMES = ["content-type", "x-a", "Set-Cookie", "vary", "date", "etag", "content-range",
                "x-powered-by", "server", "location"]
name_lists = st.lists(st.sampled_from(CONFIG_NAMES), max_size=3)
headers_config = st.fixed_dictionaries({}, optional={
    "ignore": name_lists,
    "default_ignore": st.booleans(),
    "allow": st.none() | name_lists,
    "presence_only": name_lists,
    "content_type": st.sampled_from(["media-type", "exact"]),
    "ignore_on_status": st.dictionaries(
        st.sampled_from(["200", "206", "416", "0416", "404", "٤١٦"]), name_lists, max_size=2),
})

LITERAL_SEGMENTS = ["a", "b", "k1", "0", "1", "2", "01", "x~1y", "~0", "", "é"]
GLOB_SEGMENTS = ["*", "**", "k*", "[ab]", "[!a]", "?", "[0-1]", "[]a]", "[!]", "[a-]",
                 "[z-a]", "[a-c-e]", "[[]", "x[", "[!z-a]"]


def pointers(segments: list[str]) -> st.SearchStrategy[str]:
    return (st.lists(st.sampled_from(segments), min_size=1, max_size=3)
            .filter(lambda s: s[-1] != "**").map(lambda s: "/" + "/".join(s)))


literal_paths = pointers(LITERAL_SEGMENTS)
any_paths = pointers(LITERAL_SEGMENTS + GLOB_SEGMENTS)


@st.composite
def json_rules(draw: st.DrawFn) -> dict[str, Any]:
    paths = draw(st.sampled_from([literal_paths, any_paths]))
    rule: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "ignore": st.lists(paths, max_size=3),
        "mask": st.lists(paths, max_size=2),
        "unordered_lists": st.booleans() | st.lists(paths, max_size=2),
        "tolerance": st.sampled_from([0, 0.0, 0.5, 1, 1e-6, 2.5]),
    }))
    return rule


SAFE_MASKS = [r"\d+", r"[0-9a-f]{4,}", r"nonce=[a-z0-9]+", r"x*", r"[^a-z]", r"é+", r"(?i)abc",
              r"a|ab", r"\d{4}-\d\d-\d\dT[0-9:.]+Z?", r"^k", r"[\x00-\x1f]"]
json_kind = json_rules().map(lambda r: {"json": r})
body_kinds = st.one_of(
    json_kind,
    st.lists(st.sampled_from(SAFE_MASKS), max_size=3).map(lambda m: {"text": {"masks": m}}),
    st.sampled_from([{"exact": {}}, {"json": None}, {"text": None}]),
)
STATUS_SPELLINGS = [200, 206, 404, 416, "416", "0416", "٤١٦", [404, "416"], [200, 206, 500]]
body_filters = st.fixed_dictionaries({}, optional={
    "path": st.sampled_from(["*", "/a*", "/a/[0-9]", "/b?", "/[!a]*", "/x", ""]),
    "content_type": st.sampled_from(["application/json", "text/", "application/",
                                     " Application/JSON ", "TEXT/PLAIN", "TEXT/À"]),
    "status": st.sampled_from(STATUS_SPELLINGS),
})
body_configs = st.tuples(body_kinds, body_filters).map(lambda kv: {**kv[1], **kv[0]})


def rule_sets(catch_all: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Configurations whose body rules end with one that applies to every response."""
    return st.fixed_dictionaries(
        {"bodies": st.tuples(st.lists(body_configs, max_size=2), catch_all)
         .map(lambda t: [*t[0], t[1]])},
        optional={"headers": headers_config})


configs = st.one_of(
    rule_sets(body_kinds),
    st.fixed_dictionaries({}, optional={"headers": headers_config,
                                        "bodies": st.lists(body_configs, max_size=3)}),
)
json_configs = rule_sets(json_kind)

# --- outputs -----------------------------------------------------------------------------------

HEADER_NAMES = [*CONFIG_NAMES, "x-b", "cache-control", "transfer-encoding"]
CONTENT_TYPES = [b"application/json", b"Application/JSON; charset=UTF-8",
                 b'application/json;charset="utf-8"', b"text/html; Charset=ISO-8859-1",
                 b"multipart/form-data; boundary=AbC", b" text/plain ;; x ; =y", b"TEXT/\xc0",
                 b"application/problem+json", b"\x1ctext/plain\xa0", b""]


@st.composite
def header_names(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=6))
    name = draw(st.sampled_from(HEADER_NAMES))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True)).encode()


header_values = (st.sampled_from(CONTENT_TYPES) | st.binary(max_size=10)
                 | st.text(max_size=6).map(str.encode)
                 | st.sampled_from([b"it's", b'say "hi"', b"both '\"", b"\\", b" \tpad\t "]))
headers = st.lists(st.tuples(header_names(), header_values), max_size=6)
statuses = st.sampled_from([200, 204, 206, 404, 416, 500]) | st.integers(100, 599)
# What a body rule is picked for: a response's status, or 0 for an executor that gave none.
rule_statuses = st.sampled_from([0, 200, 206, 404, 416, 500])
request_paths = st.sampled_from(["/", "/a", "/a/1", "/a/x", "/b1", "/bb", "/x", "/\n", "", "/é"])

text_chars = st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"])
keys = st.one_of(st.sampled_from(["a", "b", "k1", "k2", "x/y", "~", "0", "1", "é", ""]),
                 st.sampled_from(["a", "b", "k1", "0"]), st.text(text_chars, max_size=4))
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([1e16, 1e-7, 0.1, -0.0, 1e22, 5e-324, 1.7976931348623157e308,
                              123456789012345678.0, 1e15, 0.0001, 2**63, -(2**63) - 1, 2**64])
           | st.text(text_chars, max_size=6))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)


def deep(levels: int, leaf: str) -> bytes:
    return ("[" * levels + leaf + "]" * levels).encode()


SPECIAL_BODIES = [
    b'{"a": 1, "a": 2}', b"[1.50, 1E2, -0, -0.0]", b"[1e400]", b"[1e400, 1234567890123456789]",
    b"[1e400, 12345678901234567890123]", b"[NaN]", b'"\\ud800"', b'["\\ud83d\\ude00"]',
    b'[1, 12345678901234567890, "\\ud800"]', b'{"\\ud800": 1, "n": 1234567890123456789}',
    b'{"a": ["\\udc00"], "b": 1234567890123456789012}', b"\xef\xbb\xbf{}", b' {"a" : [ ] } ',
    b'{"0": {"a": 1}, "1": [3, 1, 2]}', b"[[2, 1], {}, [], null, true, 1, 1.0, \"b\", \"a\"]",
    b"[12345678901234567890123, 1e16, 2.5e-5]", deep(254, "1.5"), deep(253, "[]"),
    b'{"a": 1}x', b"[1,]", b"\xff\xfe", b"", b"nonce=abc 2024-05-01T12:00:00Z x\x00",
    b'{"k1": [{"x1": 1}, {"x1": 2}], "a": {"b": [1, 2]}}',
]


@st.composite
def json_bodies(draw: st.DrawFn, value: Any = None) -> bytes:
    doc = draw(json_values) if value is None else value
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), sort_keys=draw(st.booleans()),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    return text.encode()


bodies = st.one_of(
    json_bodies(),
    st.sampled_from(SPECIAL_BODIES),
    st.binary(max_size=12),
    st.text(st.sampled_from("ab x0129-:TZé\x00\n"), max_size=16).map(str.encode),
    json_bodies().map(lambda b: b[: len(b) // 2]),
)


def perturb(value: Any, data: st.DataObject, odds: int) -> Any:
    """A document near ``value``: each leaf nudged, retyped or changed with ``odds`` in 10."""
    if isinstance(value, dict):
        return {k: perturb(v, data, odds) for k, v in value.items()}
    if isinstance(value, list):
        return [perturb(v, data, odds) for v in value]
    if isinstance(value, bool) or value is None or data.draw(st.integers(0, 9)) >= odds:
        return value
    if isinstance(value, int | float):
        how = data.draw(st.sampled_from(["float", "near", "far"]))
        if how == "float" and abs(value) < 2**53:
            return float(value)
        if how == "near":
            return value + data.draw(st.sampled_from([1e-7, 0.25, 1, -0.4]))
        return value + 3
    return value + "!"


# --- heads, keys, verdicts and digests -------------------------------------------------------


@SETTINGS
@given(configs, statuses, headers)
def test_head_is_python_repr_of_the_canonical_headers(config: dict[str, Any], status: int,
                                                      hs: list[tuple[bytes, bytes]]) -> None:
    rules, native = both(config)
    expected = repr((status, rules.headers.canonical_headers(hs, status))).encode()
    assert native.head(status, hs) == expected


@SETTINGS
@given(configs, request_paths, statuses, headers, st.sampled_from(CONTENT_TYPES), bodies)
def test_key_and_digest_equal_python(config: dict[str, Any], path: str, status: int,
                                     hs: list[tuple[bytes, bytes]], content_type: bytes,
                                     body: bytes) -> None:
    rules, native = both(config)
    hs = [*hs, (b"Content-Type", content_type)]
    first = next(v for n, v in hs if n.lower() == b"content-type")
    rule = body_rule(rules, path, first, status)
    assert native.key(path, first, status, body) == rule.canonicalise(body).key
    head = (status, rules.headers.canonical_headers(hs, status))
    assert native.digest(status, hs, path, body) == Output("e", body, rule, head=head).digest


@SETTINGS
@given(json_configs, request_paths, st.sampled_from(CONTENT_TYPES), rule_statuses, json_values,
       st.sampled_from([0, 0, 1, 3]), st.data())
def test_verdicts_on_near_documents_equal_python(config: dict[str, Any], path: str,
                                                 content_type: bytes, status: int, doc: Any,
                                                 odds: int, data: st.DataObject) -> None:
    rules, native = both(config)
    a = data.draw(json_bodies(doc))
    b = data.draw(json_bodies(perturb(doc, data, odds)))
    rule = body_rule(rules, path, content_type, status)
    expected = Output("a", a, rule).agrees_with(Output("b", b, rule))
    assert native.equivalent(path, content_type, status, a, b) == expected
    assert native.key(path, content_type, status, b) == rule.canonicalise(b).key


@SETTINGS
@given(configs, request_paths, st.sampled_from(CONTENT_TYPES), rule_statuses, bodies, bodies)
def test_verdicts_on_any_bodies_equal_python(config: dict[str, Any], path: str,
                                             content_type: bytes, status: int, a: bytes,
                                             b: bytes) -> None:
    rules, native = both(config)
    rule = body_rule(rules, path, content_type, status)
    expected = Output("a", a, rule).agrees_with(Output("b", b, rule))
    assert native.equivalent(path, content_type, status, a, b) == expected


def test_the_deepest_document_both_encode_is_compared_alike() -> None:
    rules, native = both({"bodies": [{"json": {"tolerance": 0.5, "unordered_lists": True}}]})
    a, b = deep(253, "[1.0, 2e16]"), deep(253, "[2e16, 1.25]")
    rule = body_rule(rules, "/", b"application/json", 200)
    assert native.key("/", b"application/json", 200, a) == rule.canonicalise(a).key
    assert native.equivalent("/", b"", 200, a, b) == Output("a", a, rule).agrees_with(
        Output("b", b, rule))


def test_caddy_like_416_bodies_agree_only_under_a_416_rule() -> None:
    config = {"bodies": [{"status": 416, "text": {"masks": ["(?s)^.*"]}}]}
    rules, native = both(config)
    site, caddy = b"<!DOCTYPE html>\n<p>Range not satisfiable</p>\n", b""
    for status, agree in ((416, True), (200, False), (206, False)):
        rule = body_rule(rules, "/index.html", b"text/html", status)
        assert Output("a", site, rule).agrees_with(Output("b", caddy, rule)) is agree
        assert native.equivalent("/index.html", b"text/html", status, site, caddy) is agree
    # The digests the ledger records: one value on a 416, two on a 200.
    assert len({native.digest(416, [], "/index.html", body) for body in (site, caddy)}) == 1
    assert len({native.digest(200, [], "/index.html", body) for body in (site, caddy)}) == 2


# --- configuration errors ----------------------------------------------------------------------

BAD_CONFIGS: list[Any] = [
    [], "x", {"header": {}}, {"headers": [], "bodies": []},
    {"headers": {"ignore": ["ok", "a b"]}}, {"headers": {"ignore": "x"}},
    {"headers": {"ignore": {"a": 1}}}, {"headers": {"allow": "content-type"}},
    {"headers": {"allow": False}}, {"headers": {"allow": [1.5, "x"]}},
    {"headers": {"presence_only": [None]}}, {"headers": {"presence_only": "set-cookie"}},
    {"headers": {"content_type": "loose"}}, {"headers": {"content_type": 3}},
    {"headers": {"default_ignore": "no"}}, {"headers": {"default_ignore": None}},
    {"headers": {"ignore_on_status": {"999": ["x"]}}},
    {"headers": {"ignore_on_status": {"4xx": ["x"]}}},
    {"headers": {"ignore_on_status": {"416": ["bad name"]}}},
    {"headers": {"ignore_on_status": {"0416": None}}},
    {"headers": {"ignore_on_status": [416]}}, {"headers": {"ignore_on_status": {"": []}}},
    {"headers": {"ignore_on_status": {"1" * 5000: []}}},
    {"headers": {"ignore_on_status": {"it's": []}}},
    {"headers": {"content_type": "x", "allow": "y", "ignore_on_status": {"1": []}}},
    {"headers": {"allow": 1, "presence_only": 2}},
    {"bodies": {"json": {}}}, {"bodies": "json"}, {"bodies": ["json"]}, {"bodies": [None]},
    {"bodies": [{"json": {}, "text": {}}]}, {"bodies": [{"path": "/"}]},
    {"bodies": [{"path": 3, "exact": {}}]}, {"bodies": [{"content_type": None, "exact": {}}]},
    {"bodies": [{"exact": {"x": 1}}]}, {"bodies": [{"exact": {}, "pth": "/"}]},
    {"bodies": [{"exact": []}]}, {"bodies": [{"text": "x"}]},
    {"bodies": [{"json": {}}, {"json": {"ignore": ["created_at"]}}]},
    {"bodies": [{"json": {"tolerence": 1}}]}, {"bodies": [{"json": {"tolerance": "x"}}]},
    {"bodies": [{"json": {"tolerance": -1.0}}]}, {"bodies": [{"json": {"tolerance": None}}]},
    {"bodies": [{"json": {"tolerance": True}}]}, {"bodies": [{"json": {"tolerance": [1e-5]}}]},
    {"bodies": [{"json": {"tolerance": {"a\n": 1e16}}}]},
    {"bodies": [{"json": {"tolerance": -(2**80)}}]},
    {"bodies": [{"json": {"mask": ["/ok", "/a~2"]}}]}, {"bodies": [{"json": {"mask": ["/a~"]}}]},
    {"bodies": [{"json": {"ignore": ["/a/**"]}}]}, {"bodies": [{"json": {"ignore": ["/**/**"]}}]},
    {"bodies": [{"json": {"ignore": "/a"}}]}, {"bodies": [{"json": {"ignore": [3]}}]},
    {"bodies": [{"json": {"ignore": [["/a"]]}}]}, {"bodies": [{"json": {"ignore": ["é\x00"]}}]},
    {"bodies": [{"json": {"unordered_lists": None}}]},
    {"bodies": [{"json": {"unordered_lists": "/a"}}]},
    {"bodies": [{"json": {"unordered_lists": ["x"], "tolerance": -1}}]},
    {"bodies": [{"text": {"masks": "x"}}]}, {"bodies": [{"text": {"masks": [1]}}]},
    {"bodies": [{"text": {"mask": []}}]},
    {"bodies": [{"status": 999, "exact": {}}]}, {"bodies": [{"status": "4xx", "exact": {}}]},
    {"bodies": [{"status": [], "exact": {}}]}, {"bodies": [{"status": None, "exact": {}}]},
    {"bodies": [{"status": True, "exact": {}}]}, {"bodies": [{"status": 416.0, "exact": {}}]},
    {"bodies": [{"status": [200, "it's"], "exact": {}}]},
    {"bodies": [{"status": [[416]], "exact": {}}]},
    {"bodies": [{"status": {"416": 1}, "exact": {}}]},
    {"bodies": [{"status": 2**70, "exact": {}}]},
    {"bodies": [{"status": "1" * 5000, "exact": {}}]},
    {"bodies": [{"status": ["416", "2" * 5000], "exact": {}}]},
    {"bodies": [{"status": -416, "exact": {}}]},
    {"bodies": [{"status": 416, "path": 3, "exact": {}}]},
    {"bodies": [{"status": "x", "content_type": None, "exact": {}}]},
    {"bodies": [{"status": "x", "json": {"ignore": "y"}}]},
]


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda c: json.dumps(c)[:60])
def test_bad_configurations_are_refused_with_pythons_message(config: Any) -> None:
    with pytest.raises(ValueError) as python:
        reference(config)
    with pytest.raises(ValueError) as native:
        _native.compile_rules(json.dumps(config))
    assert str(native.value) == str(python.value)


@pytest.mark.parametrize("pattern", ["(", "[a", "a{2,1}", "*"])
def test_bad_regular_expressions_are_named_as_python_names_them(pattern: str) -> None:
    config = {"bodies": [{"exact": {}}, {"text": {"masks": ["ok", pattern]}}]}
    with pytest.raises(ValueError) as python:
        reference(config)
    with pytest.raises(ValueError) as native:
        _native.compile_rules(json.dumps(config))
    prefix = f"bodies[1].text.masks[1]: invalid regular expression {pattern!r}: "
    assert str(python.value).startswith(prefix)
    assert str(native.value).startswith(prefix)


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 700) | st.sampled_from([-1.5, 0.0, 1e-6])
    | st.sampled_from(["", "x", "/a", "media-type", "exact", "416", "a b", "/**", "*"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["ignore", "allow", "json", "text", "exact", "path", "masks", "mask",
                         "tolerance", "unordered_lists", "416", "x"]), inner, max_size=3),
    max_leaves=8,
)
messy_configs = st.one_of(
    configs,
    st.dictionaries(st.sampled_from(["headers", "bodies"]), junk, max_size=2),
    st.fixed_dictionaries({"headers": st.dictionaries(st.sampled_from(
        ["ignore", "default_ignore", "allow", "presence_only", "content_type",
         "ignore_on_status"]), junk, max_size=3)}),
    st.fixed_dictionaries({"bodies": st.lists(st.dictionaries(st.sampled_from(
        ["json", "text", "exact", "path", "content_type", "status"]), junk | json_rules(),
        max_size=3), max_size=2)}),
)


@SETTINGS
@given(messy_configs)
def test_any_configuration_is_accepted_or_refused_as_python_does(config: Any) -> None:
    try:
        reference(config)
        expected = None
    except ValueError as exc:
        expected = str(exc)
    try:
        _native.compile_rules(json.dumps(config))
        got = None
    except ValueError as exc:
        got = str(exc)
    if got is not None and expected is not None and "invalid regular expression" in expected:
        # Both refuse it; the engines word the reason their own way (see canon/mod.rs).
        got, expected = (m.rsplit("': ", 1)[0] for m in (got, expected))
    assert got == expected
