"""Canonicalisers: what may differ between executors (spelling) and what may not (meaning)."""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core import canonical_json as canon
from endosec.core.canonical_http import HeaderRule
from endosec.core.canonical_json import INVALID_PREFIX, MASK_TOKEN, JsonRule
from endosec.core.canonicalise import ExactBytes, RuleSet, TextRule, compile_rules
from endosec.core.model import Canonicaliser, Output


def agree(rule: Canonicaliser, a: bytes | str, b: bytes | str) -> bool:
    raw_a = a.encode() if isinstance(a, str) else a
    raw_b = b.encode() if isinstance(b, str) else b
    return Output("a", raw_a, rule).agrees_with(Output("b", raw_b, rule))


def key(rule: Canonicaliser, doc: Any) -> bytes:
    return rule.canonicalise(json.dumps(doc).encode()).key


# --- exact and text ----------------------------------------------------------------------------

def test_exact_bytes_agree_only_byte_for_byte() -> None:
    assert agree(ExactBytes(), "abc", "abc")
    assert not agree(ExactBytes(), "abc", "abd")
    assert ExactBytes().canonicalise(b"abc").key == b"abc"


def test_text_masks_replace_matches_with_a_token() -> None:
    rule = TextRule([r"\d{4}-\d\d-\d\dT[0-9:]+Z", r"nonce=\w+"])
    a = "at 2024-05-01T12:00:00Z nonce=abc ok"
    b = "at 2025-01-09T08:30:59Z nonce=zz9 ok"
    assert agree(rule, a, b)
    assert not agree(rule, a, b.replace("ok", "KO"))
    assert rule.canonicalise(a.encode()).key == f"at {MASK_TOKEN} {MASK_TOKEN} ok".encode()


def test_text_keeps_bytes_that_are_not_utf8() -> None:
    rule = TextRule([r"\d+"])
    assert rule.canonicalise(b"\xff 12 \xfe").key == b"\xff " + MASK_TOKEN.encode() + b" \xfe"
    assert not agree(rule, b"\xff 1", b"\xfe 1")


def test_text_rule_rejects_bad_regex_naming_it() -> None:
    with pytest.raises(ValueError, match=r"masks\[1\]: invalid regular expression"):
        TextRule(["ok", "("])


# --- JSON ----------------------------------------------------------------------------------------

def test_json_key_order_and_whitespace_do_not_matter() -> None:
    rule = JsonRule()
    assert agree(rule, '{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}')
    assert not agree(rule, '{"a": 1, "b": [1, 2]}', '{"a": 1, "b": [2, 1]}')


def test_json_ignore_drops_fields_by_pointer() -> None:
    rule = JsonRule(ignore=["/created_at", "/items/0/id", "/a~1b", "/t~0"])
    a = {"created_at": 1, "items": [{"id": 1, "v": 2}], "a/b": 1, "t~": 1, "k": 0}
    b = {"created_at": 2, "items": [{"id": 9, "v": 2}], "a/b": 2, "t~": 2, "k": 0}
    assert key(rule, a) == key(rule, b)
    assert key(rule, a) == b'{"items":[{"v":2}],"k":0}'
    assert key(rule, a) != key(rule, {**b, "k": 1})


def test_json_ignoring_array_elements_uses_original_indices() -> None:
    rule = JsonRule(ignore=["/0", "/2"], mask=["/1"])
    assert key(rule, [10, 11, 12, 13]) == f'["{MASK_TOKEN}",13]'.encode()
    walked = JsonRule(ignore=["/*/0", "/x/2"], mask=["/x/1"])  # same edits through the walker
    assert key(walked, {"x": [10, 11, 12, 13]}) == f'{{"x":["{MASK_TOKEN}",13]}}'.encode()
    walked = JsonRule(ignore=["/x/2", "/x/0", "/*/none"])
    assert key(walked, {"x": [10, 11, 12, 13]}) == b'{"x":[11,13]}'


def test_json_globs_match_one_level_any_depth_and_patterns() -> None:
    rule = JsonRule(ignore=["/*/ts", "/**/id", "/meta/trace_*"])
    a = {"x": {"ts": 1, "v": 1}, "deep": [{"k": {"id": 1}}], "id": 3,
         "meta": {"trace_id": "a", "trace_span": "b", "keep": 1}}
    b = {"x": {"ts": 2, "v": 1}, "deep": [{"k": {"id": 2}}], "id": 4,
         "meta": {"trace_id": "c", "trace_span": "d", "keep": 1}}
    assert key(rule, a) == key(rule, b)
    assert key(rule, a) != key(rule, {**b, "meta": {"keep": 2}})
    assert key(rule, {"ts": 1}) == b'{"ts":1}'  # "*" is exactly one level


def test_json_mask_keeps_presence() -> None:
    rule = JsonRule(mask=["/token"])
    assert agree(rule, '{"token": "a", "v": 1}', '{"token": "b", "v": 1}')
    assert not agree(rule, '{"token": "a", "v": 1}', '{"v": 1}')


def test_json_numbers_must_match_exactly_without_tolerance() -> None:
    rule = JsonRule()
    assert not agree(rule, "[1]", "[1.0]")
    assert not agree(rule, "[0.1]", "[0.10000001]")


def test_json_tolerance_compares_numbers_by_value_but_not_booleans() -> None:
    rule = JsonRule(tolerance=1e-6)
    assert agree(rule, '{"p": 0.1, "n": 1}', '{"p": 0.1000001, "n": 1.0}')
    assert not agree(rule, '{"p": 0.1}', '{"p": 0.11}')
    assert not agree(rule, "[true]", "[1]")
    assert not agree(rule, '{"p": 1}', '{"q": 1}')
    assert not agree(rule, '{"p": 1}', '{"p": "1"}')


def test_json_unordered_lists_everywhere_or_at_paths() -> None:
    everywhere = JsonRule(unordered_lists=True)
    assert agree(everywhere, '{"a": [3, 1, [2, 1]], "b": [{"x": 1}, "s"]}',
                 '{"b": ["s", {"x": 1}], "a": [[1, 2], 1, 3]}')
    assert not agree(everywhere, "[1, 2]", "[1, 2, 2]")
    at_path = JsonRule(unordered_lists=["/tags"])
    assert agree(at_path, '{"tags": ["b", "a"], "seq": [1, 2]}',
                 '{"tags": ["a", "b"], "seq": [1, 2]}')
    assert not agree(at_path, '{"tags": [], "seq": [1, 2]}', '{"tags": [], "seq": [2, 1]}')


def test_json_unordered_lists_with_tolerance_pair_near_numbers() -> None:
    rule = JsonRule(tolerance=0.01, unordered_lists=True)
    assert agree(rule, "[9.999, 5]", "[5, 10.0]")


def test_invalid_json_gets_a_key_no_valid_document_has() -> None:
    rule = JsonRule()
    assert rule.canonicalise(b"{oops").key == INVALID_PREFIX + b"{oops"
    assert agree(rule, "{oops", "{oops")  # identical bodies still agree
    assert not agree(rule, "{oops", "{oops!")
    assert not agree(rule, "{oops", "{}")
    assert not agree(JsonRule(tolerance=1.0), "[1", "[1 ")


def test_integers_beyond_64_bits_are_compared_exactly() -> None:
    rule = JsonRule()
    assert not agree(rule, "[12345678901234567890123]", "[12345678901234567890124]")
    assert agree(rule, '{"n": 12345678901234567890123, "a": 1}',
                 '{"a": 1, "n": 12345678901234567890123}')
    assert not agree(rule, "[-9223372036854775809]", "[-9223372036854775808]")
    assert not agree(rule, "[NaN]", "[NaN ]")  # not JSON, whichever parser runs
    assert rule.canonicalise(b'{"n": NaN, "d": "1234567890123456789012"}').key.startswith(
        INVALID_PREFIX)


def test_deep_nesting_is_invalid_rather_than_a_crash() -> None:
    for raw in (b"[" * 100_000, b"[" * 5000 + b"]" * 5000):
        for rule in (JsonRule(), JsonRule(unordered_lists=True), JsonRule(ignore=["/**/x"])):
            assert rule.canonicalise(raw).key.startswith(INVALID_PREFIX)
    nested: Any = 1
    for _ in range(900):
        nested = [nested]
    deep = json.dumps(nested).encode()
    rule = JsonRule(tolerance=0.5)
    a, b = rule.canonicalise(deep), rule.canonicalise(deep.replace(b"1", b"2"))
    assert not rule.equivalent(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"ignore": ["created_at"]}, r"ignore\[0\]: invalid JSON pointer 'created_at'"),
    ({"mask": ["/ok", "/a~2"]}, r"mask\[1\]: invalid JSON pointer '/a~2'"),
    ({"ignore": ["/a/**"]}, r"ignore\[0\].*cannot end in '\*\*'"),
    ({"unordered_lists": ["x"]}, r"unordered_lists\[0\]"),
    ({"ignore": "/a"}, "ignore: expected a list"),
    ({"ignore": [3]}, r"ignore\[0\]: a path must be a string"),
    ({"tolerance": -1.0}, "tolerance"),
    ({"tolerance": float("inf")}, "tolerance"),
])
def test_json_rule_rejects_bad_paths_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JsonRule(**kwargs)


def test_rules_are_hashable_values() -> None:
    assert JsonRule(ignore=["/a"]) == JsonRule(ignore=("/a",))
    assert hash(JsonRule(ignore=["/a"])) == hash(JsonRule(ignore=("/a",)))
    assert hash(TextRule(["x"])) == hash(TextRule(("x",)))


# --- headers ------------------------------------------------------------------------------------

def test_headers_are_compared_case_insensitively_without_the_default_noise() -> None:
    rule = HeaderRule()
    a = [(b"Date", b"Mon"), (b"Server", b"nginx"), (b"X-Thing", b"1"), (b"ETag", b'"a"'),
         (b"Content-Length", b"10"), (b"Cache-Control", b"no-store")]
    b = [(b"cache-control", b"no-store "), (b"x-thing", b"1"), (b"server", b"Apache"),
         (b"date", b"Tue"), (b"transfer-encoding", b"chunked")]
    assert rule.canonical_headers(a) == rule.canonical_headers(b)
    assert rule.canonical_headers(a) == ((b"cache-control", b"no-store"), (b"x-thing", b"1"))


def test_repeated_headers_keep_their_order() -> None:
    rule = HeaderRule()
    got = rule.canonical_headers([(b"Vary", b"b"), (b"A", b"1"), (b"vary", b"a")])
    assert got == ((b"a", b"1"), (b"vary", b"b"), (b"vary", b"a"))


def test_allow_list_and_presence_only() -> None:
    rule = HeaderRule(allow=["content-type", "location"], presence_only=["Set-Cookie"])
    got = rule.canonical_headers([(b"Location", b"/x"), (b"X-Other", b"1"),
                                  (b"Set-Cookie", b"s=1"), (b"set-cookie", b"t=2")])
    assert got == ((b"location", b"/x"), (b"set-cookie", b""))
    assert rule.canonical_headers([(b"Set-Cookie", b"zz")]) == ((b"set-cookie", b""),)
    assert rule.canonical_headers([]) != rule.canonical_headers([(b"Set-Cookie", b"zz")])


@pytest.mark.parametrize("value, expected", [
    (b"application/json", b"application/json"),
    (b"Application/JSON; charset=UTF-8", b"application/json"),
    (b'application/json;charset="utf-8"', b"application/json"),
    (b"text/html; Charset=ISO-8859-1", b"text/html;charset=iso-8859-1"),
    (b"multipart/form-data; boundary=AbC", b"multipart/form-data;boundary=AbC"),
])
def test_content_type_is_normalised_as_a_media_type(value: bytes, expected: bytes) -> None:
    assert HeaderRule().canonical_headers([(b"Content-Type", value)]) == (
        (b"content-type", expected),)


def test_content_type_exact_mode_keeps_the_spelling() -> None:
    rule = HeaderRule(content_type="exact")
    got = rule.canonical_headers([(b"Content-Type", b"application/json; charset=utf-8")])
    assert got == ((b"content-type", b"application/json; charset=utf-8"),)


def test_header_rule_rejects_bad_names_and_modes() -> None:
    with pytest.raises(ValueError, match=r"presence_only\[0\]: invalid header name"):
        HeaderRule(presence_only=["bad name"])
    with pytest.raises(ValueError, match="content_type"):
        HeaderRule(content_type="lenient")


# --- compile_rules ----------------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "headers": {"ignore": ["x-powered-by"], "presence_only": ["set-cookie"]},
    "bodies": [
        {"path": "/notes*", "content_type": "application/json",
         "json": {"ignore": ["/created_at"], "tolerance": 0.001}},
        {"content_type": "text/", "text": {"masks": [r"\d+"]}},
        {"path": "/raw/*", "exact": None},
        {"json": {}},
    ],
}


def test_compile_rules_picks_the_first_matching_body_rule() -> None:
    rules = compile_rules(CONFIG)
    notes = rules.for_response("/notes/7", "Application/JSON; charset=utf-8", 200)
    assert isinstance(notes, JsonRule) and notes.ignore == ("/created_at",)
    assert isinstance(rules.for_response("/x", "text/plain", 200), TextRule)
    assert isinstance(rules.for_response("/raw/1", "application/json", 200), ExactBytes)
    catch_all = rules.for_response("/other", "application/json", 200)
    assert isinstance(catch_all, JsonRule) and catch_all.ignore == ()
    assert b"x-powered-by" not in dict(rules.headers.canonical_headers([(b"X-Powered-By", b"1")]))
    assert rules.headers.canonical_headers([(b"Date", b"x")]) == ()  # defaults kept


def test_compile_rules_defaults_to_exact_bytes() -> None:
    rules = compile_rules({})
    assert isinstance(rules.for_response("/", "application/json", 200), ExactBytes)
    assert rules.headers == HeaderRule()


def test_default_header_ignores_can_be_switched_off() -> None:
    rules = compile_rules({"headers": {"default_ignore": False, "ignore": ["x-a"]}})
    assert rules.headers.canonical_headers([(b"Date", b"1"), (b"X-A", b"2")]) == (
        (b"date", b"1"),)


@pytest.mark.parametrize("config, message", [
    ({"bodies": [{"json": {}}, {"json": {"ignore": ["created_at"]}}]},
     r"^bodies\[1\]\.json\.ignore\[0\]: invalid JSON pointer 'created_at'"),
    ({"bodies": [{"json": {"tolerence": 1}}]}, r"^bodies\[0\]\.json\.tolerence: unknown field"),
    ({"bodies": [{"json": {"tolerance": "x"}}]}, r"^bodies\[0\]\.json\.tolerance:"),
    ({"bodies": [{"text": {"masks": ["("]}}]}, r"^bodies\[0\]\.text\.masks\[0\]: invalid"),
    ({"bodies": [{"json": {}, "text": {}}]}, r"^bodies\[0\]: needs exactly one"),
    ({"bodies": [{"path": 3, "exact": {}}]}, r"^bodies\[0\]\.path: expected a string"),
    ({"bodies": [{"exact": {"x": 1}}]}, r"^bodies\[0\]\.exact\.x: unknown field"),
    ({"bodies": [{"exact": {}, "pth": "/"}]}, r"^bodies\[0\]\.pth: unknown field"),
    ({"bodies": {"json": {}}}, r"^bodies: expected a list"),
    ({"bodies": ["json"]}, r"^bodies\[0\]: expected a mapping"),
    ({"headers": {"ignore": ["ok", "a b"]}}, r"^headers\.ignore\[1\]: invalid header name"),
    ({"headers": {"allow": "content-type"}}, r"^headers\.allow: expected a list"),
    ({"headers": {"content_type": "loose"}}, r"^headers\.content_type:"),
    ({"headers": {"default_ignore": "no"}}, r"^headers\.default_ignore:"),
    ({"header": {}}, r"^header: unknown field"),
])
def test_compile_rules_names_the_bad_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_rules(config)


# --- properties --------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


def _shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


@given(documents, st.randoms(use_true_random=False))
def test_key_order_is_irrelevant(doc: dict[str, Any], rnd: random.Random) -> None:
    rule = JsonRule()
    assert key(rule, doc) == key(rule, _shuffled(doc, rnd))


@given(documents, json_values, json_values, json_values, json_values)
def test_ignored_fields_are_irrelevant(doc: dict[str, Any], ts1: Any, ts2: Any, id1: Any,
                                       id2: Any) -> None:
    rule = JsonRule(ignore=["/ts", "/**/request_id"])
    a = {**doc, "ts": ts1, "nested": {"request_id": id1, "keep": 1}}
    b = {**doc, "ts": ts2, "nested": {"request_id": id2, "keep": 1}}
    assert agree(rule, json.dumps(a), json.dumps(b))


@given(documents.filter(bool), st.data())
def test_changing_a_field_that_is_not_ignored_disagrees(doc: dict[str, Any],
                                                        data: st.DataObject) -> None:
    rule = JsonRule(ignore=["/ts"])
    doc = {k: v for k, v in doc.items() if k != "ts"}
    changed = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_leaves(changed)))
    if not path:
        return
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    old = parent[path[-1]]
    if isinstance(old, int) and not isinstance(old, bool):
        parent[path[-1]] = old + 1
    else:
        parent[path[-1]] = {"was": old}
    assert not agree(rule, json.dumps({**doc, "ts": 1}), json.dumps({**changed, "ts": 1}))


pointer_segments = st.sampled_from(["a", "b", "0", "1", "2"])
pointers = st.lists(pointer_segments, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
small_docs = st.recursive(
    st.integers(0, 3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "b", "c", "0", "1"]), inner, max_size=4),
    max_leaves=15,
)


@given(small_docs, st.lists(pointers, max_size=3), st.lists(pointers, max_size=2),
       st.lists(pointers, max_size=2))
def test_plain_pointers_edit_like_the_general_walk(doc: Any, ignore: list[str],
                                                   mask: list[str], order: list[str]) -> None:
    rule = JsonRule(ignore=ignore, mask=mask, unordered_lists=order)
    program = rule._program
    fast, walked = copy.deepcopy(doc), copy.deepcopy(doc)
    pointer_program = canon._literal_program(program)
    assert pointer_program is not None
    canon._apply_pointers(fast, pointer_program)
    canon._edit(walked, canon._closure(program, [(p, 0) for p in range(len(program))]), program)
    assert fast == walked


def test_headers_ignored_for_some_statuses_only() -> None:
    rules = compile_rules({"headers": {"ignore_on_status": {416: ["content-range"]}}})
    with_range = ((b"Content-Range", b"bytes */100"), (b"Content-Type", b"text/html"))
    without = ((b"Content-Type", b"text/html"),)
    # For a 416 the header is exempt...
    assert rules.headers.canonical_headers(with_range, 416) == \
        rules.headers.canonical_headers(without, 416)
    # ...for every other status it still counts.
    assert rules.headers.canonical_headers(with_range, 206) != \
        rules.headers.canonical_headers(without, 206)
    assert rules.headers.canonical_headers(with_range) != \
        rules.headers.canonical_headers(without)
    # A config that went through JSON spells the status as a string; it means the same.
    as_json = compile_rules({"headers": {"ignore_on_status": {"416": ["content-range"]}}})
    assert as_json.headers.canonical_headers(with_range, 416) == \
        as_json.headers.canonical_headers(without, 416)


# Caddy answers an unsatisfiable Range with its own 416 page; nginx, Apache and lighttpd with
# the site's. Only that status may differ in its body.
SITE_416 = b"<!DOCTYPE html>\n<html><body>Range not satisfiable</body></html>\n"
CADDY_416 = b""
UNSATISFIABLE = {"bodies": [{"status": 416, "text": {"masks": ["(?s)^.*"]}}]}


def _output(rules: RuleSet, name: str, status: int, body: bytes) -> Output:
    return Output(name, body, rules.for_response("/index.html", "text/html", status),
                  head=(status, rules.headers.canonical_headers([], status)))


@pytest.mark.parametrize("config", [UNSATISFIABLE, {"bodies": [{"status": "416",
                                                                 "text": {"masks": ["(?s)^.*"]}}]},
                                    {"bodies": [{"status": [404, "416"],
                                                 "text": {"masks": ["(?s)^.*"]}}]}])
def test_body_rules_limited_to_a_status_exempt_that_status_only(config: dict) -> None:
    rules = compile_rules(config)
    assert _output(rules, "nginx", 416, SITE_416).agrees_with(
        _output(rules, "caddy", 416, CADDY_416))
    assert _output(rules, "nginx", 416, SITE_416).agrees_with(
        _output(rules, "caddy", 416, b"416 Range Not Satisfiable\n"))
    # The same bodies on a 200 are still compared byte for byte.
    assert not _output(rules, "nginx", 200, SITE_416).agrees_with(
        _output(rules, "caddy", 200, CADDY_416))
    # An executor that gave no response (status 0) only meets rules without a status.
    assert isinstance(rules.for_response("/index.html", "text/html", 0), ExactBytes)


def test_without_a_status_rule_different_416_bodies_dissent() -> None:
    rules = compile_rules({})
    assert not _output(rules, "nginx", 416, SITE_416).agrees_with(
        _output(rules, "caddy", 416, CADDY_416))


@pytest.mark.parametrize(("status", "message"), [
    (999, "bodies[0].status: 999 is not an HTTP status"),
    ("4xx", "bodies[0].status: '4xx' is not an HTTP status"),
    (True, "bodies[0].status: True is not an HTTP status"),
    (416.0, "bodies[0].status: 416.0 is not an HTTP status"),
    (None, "bodies[0].status: None is not an HTTP status"),
    ([200, "x"], "bodies[0].status[1]: 'x' is not an HTTP status"),
    ([], "bodies[0].status: an empty list matches no response"),
])
def test_bad_body_statuses_name_the_field(status: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_rules({"bodies": [{"status": status, "exact": {}}]})


@pytest.mark.parametrize(("config", "message"), [
    ({"ignore_on_status": {999: ["x"]}}, "headers.ignore_on_status: 999 is not an HTTP status"),
    ({"ignore_on_status": {"4xx": ["x"]}}, "headers.ignore_on_status: '4xx' is not"),
    ({"ignore_on_status": {416: ["bad name"]}}, "headers.ignore_on_status.416[0]: invalid"),
    ({"ignore_on_status": [416]}, "headers.ignore_on_status: expected a mapping"),
])
def test_bad_status_exemptions_name_the_field(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_rules({"headers": config})
