//! The essential cases of tests/test_canonicalise.py, against this port.

use serde_json::{json, Value as Json};

use super::*;

fn rules(config: Json) -> RuleSet {
    RuleSet::compile(&config).expect("a valid configuration")
}

fn rule(kind: Json) -> Arc<BodyRule> {
    rules(json!({"bodies": [kind]})).body_rule("/", b"", 200).clone()
}

fn json_rule(config: Json) -> Arc<BodyRule> {
    rule(json!({"json": config}))
}

fn key(rule: &BodyRule, raw: &str) -> String {
    String::from_utf8_lossy(&rule.canonicalise(raw.as_bytes()).key).into_owned()
}

fn agree(rule: &BodyRule, a: &[u8], b: &[u8]) -> bool {
    a == b || rule.equivalent(&rule.canonicalise(a), &rule.canonicalise(b))
}

fn agree_text(rule: &BodyRule, a: &str, b: &str) -> bool {
    agree(rule, a.as_bytes(), b.as_bytes())
}

fn head(rules: &RuleSet, status: u16, headers: &[(&str, &str)]) -> String {
    let headers: Vec<(Bytes, Bytes)> = headers.iter()
        .map(|(n, v)| (Bytes::copy_from_slice(n.as_bytes()), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    String::from_utf8(rules.canonical_head(status, &headers)).expect("a repr is ASCII")
}

fn error(config: Json) -> String {
    RuleSet::compile(&config).expect_err("an invalid configuration")
}

// --- exact and text ----------------------------------------------------------------------------

#[test]
fn exact_bytes_agree_only_byte_for_byte() {
    let exact = RuleSet::default().body_rule("/", b"application/json", 200).clone();
    assert!(agree_text(&exact, "abc", "abc"));
    assert!(!agree_text(&exact, "abc", "abd"));
    assert_eq!(key(&exact, "abc"), "abc");
}

#[test]
fn text_masks_replace_matches_with_a_token() {
    let text = rule(json!({"text": {"masks": [r"\d{4}-\d\d-\d\dT[0-9:]+Z", r"nonce=\w+"]}}));
    let a = "at 2024-05-01T12:00:00Z nonce=abc ok";
    let b = "at 2025-01-09T08:30:59Z nonce=zz9 ok";
    assert!(agree_text(&text, a, b));
    assert!(!agree_text(&text, a, &b.replace("ok", "KO")));
    assert_eq!(key(&text, a), "at <masked> <masked> ok");
}

#[test]
fn text_keeps_bytes_that_are_not_utf8() {
    let text = rule(json!({"text": {"masks": [r"\d+"]}}));
    assert_eq!(text.canonicalise(b"\xff 12 \xfe").key, b"\xff <masked> \xfe");
    assert!(!agree(&text, b"\xff 1", b"\xfe 1"));
    let any = rule(json!({"text": {"masks": ["[^a]"]}}));
    assert_eq!(any.canonicalise(b"a\xffa").key, b"a<masked>a");
}

#[test]
fn text_empty_matches_follow_python() {
    // re.sub("x*", "-", "abxd") == "-a-b--d-"
    let text = rule(json!({"text": {"masks": ["x*"]}}));
    assert_eq!(key(&text, "abxd"), "<masked>a<masked>b<masked><masked>d<masked>");
}

#[test]
fn text_rule_rejects_bad_regex_naming_it() {
    let message = error(json!({"bodies": [{"text": {"masks": ["ok", "("]}}]}));
    assert!(message.starts_with("bodies[0].text.masks[1]: invalid regular expression '(': "),
            "{message}");
}

// --- JSON ----------------------------------------------------------------------------------------

#[test]
fn json_key_order_and_whitespace_do_not_matter() {
    let plain = json_rule(json!({}));
    assert!(agree_text(&plain, r#"{"a": 1, "b": [1, 2]}"#, r#"{"b":[1,2],"a":1}"#));
    assert!(!agree_text(&plain, r#"{"a": 1, "b": [1, 2]}"#, r#"{"a": 1, "b": [2, 1]}"#));
}

#[test]
fn json_ignore_drops_fields_by_pointer() {
    let r = json_rule(json!({"ignore": ["/created_at", "/items/0/id", "/a~1b", "/t~0"]}));
    let a = r#"{"created_at": 1, "items": [{"id": 1, "v": 2}], "a/b": 1, "t~": 1, "k": 0}"#;
    let b = r#"{"created_at": 2, "items": [{"id": 9, "v": 2}], "a/b": 2, "t~": 2, "k": 0}"#;
    assert_eq!(key(&r, a), key(&r, b));
    assert_eq!(key(&r, a), r#"{"items":[{"v":2}],"k":0}"#);
    assert_ne!(key(&r, a), key(&r, &b.replace(r#""k": 0"#, r#""k": 1"#)));
}

#[test]
fn json_ignoring_array_elements_uses_original_indices() {
    let r = json_rule(json!({"ignore": ["/0", "/2"], "mask": ["/1"]}));
    assert_eq!(key(&r, "[10, 11, 12, 13]"), r#"["<masked>",13]"#);
    let walked = json_rule(json!({"ignore": ["/*/0", "/x/2"], "mask": ["/x/1"]}));
    assert_eq!(key(&walked, r#"{"x": [10, 11, 12, 13]}"#), r#"{"x":["<masked>",13]}"#);
    let walked = json_rule(json!({"ignore": ["/x/2", "/x/0", "/*/none"]}));
    assert_eq!(key(&walked, r#"{"x": [10, 11, 12, 13]}"#), r#"{"x":[11,13]}"#);
}

#[test]
fn json_globs_match_one_level_any_depth_and_patterns() {
    let r = json_rule(json!({"ignore": ["/*/ts", "/**/id", "/meta/trace_*"]}));
    let a = r#"{"x": {"ts": 1, "v": 1}, "deep": [{"k": {"id": 1}}], "id": 3,
                "meta": {"trace_id": "a", "trace_span": "b", "keep": 1}}"#;
    let b = r#"{"x": {"ts": 2, "v": 1}, "deep": [{"k": {"id": 2}}], "id": 4,
                "meta": {"trace_id": "c", "trace_span": "d", "keep": 1}}"#;
    assert_eq!(key(&r, a), key(&r, b));
    assert_ne!(key(&r, a), key(&r, &b.replace(r#""keep": 1"#, r#""keep": 2"#)));
    assert_eq!(key(&r, r#"{"ts": 1}"#), r#"{"ts":1}"#); // "*" is exactly one level
}

#[test]
fn json_mask_keeps_presence() {
    let r = json_rule(json!({"mask": ["/token"]}));
    assert!(agree_text(&r, r#"{"token": "a", "v": 1}"#, r#"{"token": "b", "v": 1}"#));
    assert!(!agree_text(&r, r#"{"token": "a", "v": 1}"#, r#"{"v": 1}"#));
}

#[test]
fn json_numbers_must_match_exactly_without_tolerance() {
    let plain = json_rule(json!({}));
    assert!(!agree_text(&plain, "[1]", "[1.0]"));
    assert!(!agree_text(&plain, "[0.1]", "[0.10000001]"));
    assert!(agree_text(&plain, "[1.50, 1E2, -0]", "[1.5, 100.0, 0]"));
    assert!(!agree_text(&plain, "[-0.0]", "[0.0]"));
}

#[test]
fn json_tolerance_compares_numbers_by_value_but_not_booleans() {
    let r = json_rule(json!({"tolerance": 1e-6}));
    assert!(agree_text(&r, r#"{"p": 0.1, "n": 1}"#, r#"{"p": 0.1000001, "n": 1.0}"#));
    assert!(!agree_text(&r, r#"{"p": 0.1}"#, r#"{"p": 0.11}"#));
    assert!(!agree_text(&r, "[true]", "[1]"));
    assert!(!agree_text(&r, r#"{"p": 1}"#, r#"{"q": 1}"#));
    assert!(!agree_text(&r, r#"{"p": 1}"#, r#"{"p": "1"}"#));
    let whole = json_rule(json!({"tolerance": 1}));
    assert!(agree_text(&whole, "[12345678901234567890123]", "[12345678901234567890124]"));
    assert!(!agree_text(&whole, "[12345678901234567890123]", "[12345678901234567890125]"));
}

#[test]
fn json_unordered_lists_everywhere_or_at_paths() {
    let everywhere = json_rule(json!({"unordered_lists": true}));
    assert!(agree_text(&everywhere, r#"{"a": [3, 1, [2, 1]], "b": [{"x": 1}, "s"]}"#,
                       r#"{"b": ["s", {"x": 1}], "a": [[1, 2], 1, 3]}"#));
    assert!(!agree_text(&everywhere, "[1, 2]", "[1, 2, 2]"));
    assert_eq!(key(&everywhere, r#"[null, "b", 2.5, true, "a", 1, {}]"#),
               r#"[1,2.5,"a","b",null,true,{}]"#);
    let at_path = json_rule(json!({"unordered_lists": ["/tags"]}));
    assert!(agree_text(&at_path, r#"{"tags": ["b", "a"], "seq": [1, 2]}"#,
                       r#"{"tags": ["a", "b"], "seq": [1, 2]}"#));
    assert!(!agree_text(&at_path, r#"{"tags": [], "seq": [1, 2]}"#,
                        r#"{"tags": [], "seq": [2, 1]}"#));
}

#[test]
fn json_unordered_lists_with_tolerance_pair_near_numbers() {
    let r = json_rule(json!({"tolerance": 0.01, "unordered_lists": true}));
    assert!(agree_text(&r, "[9.999, 5]", "[5, 10.0]"));
}

#[test]
fn invalid_json_gets_a_key_no_valid_document_has() {
    let plain = json_rule(json!({}));
    assert_eq!(plain.canonicalise(b"{oops").key, b"\x00invalid\x00{oops");
    assert!(agree_text(&plain, "{oops", "{oops"));
    assert!(!agree_text(&plain, "{oops", "{oops!"));
    assert!(!agree_text(&plain, "{oops", "{}"));
    assert!(!agree_text(&json_rule(json!({"tolerance": 1.0})), "[1", "[1 "));
    for bad in ["[NaN]", "[1e400]", "\u{feff}{}", "[1,]", "\"\\ud800\"", "[01]"] {
        assert!(key(&plain, bad).starts_with('\0'), "{bad}");
    }
    assert!(plain.canonicalise(b"[\"\xff\"]").key.starts_with(INVALID_PREFIX));
}

#[test]
fn integers_beyond_64_bits_are_compared_exactly() {
    let plain = json_rule(json!({}));
    assert!(!agree_text(&plain, "[12345678901234567890123]", "[12345678901234567890124]"));
    assert!(agree_text(&plain, r#"{"n": 12345678901234567890123, "a": 1}"#,
                       r#"{"a": 1, "n": 12345678901234567890123}"#));
    assert!(!agree_text(&plain, "[-9223372036854775809]", "[-9223372036854775808]"));
    assert!(key(&plain, r#"{"n": NaN, "d": "1234567890123456789012"}"#).starts_with('\0'));
    // With such an integer Python encodes with json.dumps, which spells floats as repr does.
    assert_eq!(key(&plain, "[12345678901234567890123, 1e16, 2.5e-5, 1e400]"),
               "[12345678901234567890123,1e+16,2.5e-05,Infinity]");
    assert_eq!(key(&plain, "[1e16, 2.5e-5, 1234567890123456789]"),
               "[1e+16,0.000025,1234567890123456789]");
}

#[test]
fn deep_nesting_is_invalid_rather_than_a_crash() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    for raw in ["[".repeat(100_000), deep(5000), deep(255)] {
        for r in [json_rule(json!({})), json_rule(json!({"unordered_lists": true})),
                  json_rule(json!({"ignore": ["/**/x"]}))] {
            assert!(r.canonicalise(raw.as_bytes()).key.starts_with(INVALID_PREFIX));
        }
    }
    let r = json_rule(json!({"tolerance": 0.5}));
    assert_eq!(key(&r, &deep(254)), deep(254));
    assert!(!agree(&r, deep(900).as_bytes(), deep(900).replace('1', "2").as_bytes()));
}

#[test]
fn json_rule_rejects_bad_paths_naming_them() {
    for (config, message) in [
        (json!({"ignore": ["created_at"]}),
         "ignore[0]: invalid JSON pointer 'created_at': must start with '/'"),
        (json!({"mask": ["/ok", "/a~2"]}),
         "mask[1]: invalid JSON pointer '/a~2': '~' must be followed by 0 or 1"),
        (json!({"ignore": ["/a/**"]}),
         "ignore[0]: invalid JSON pointer '/a/**': a path cannot end in '**'"),
        (json!({"unordered_lists": ["x"]}),
         "unordered_lists[0]: invalid JSON pointer 'x': must start with '/'"),
        (json!({"ignore": "/a"}), "ignore: expected a list of paths"),
        (json!({"ignore": [3]}), "ignore[0]: a path must be a string, got int"),
        (json!({"tolerance": -1.0}), "tolerance: must be a finite number >= 0, got -1.0"),
        (json!({"tolerance": [1e-5, null, true, "it's"]}),
         r#"tolerance: must be a finite number >= 0, got [1e-05, None, True, "it's"]"#),
    ] {
        assert_eq!(error(json!({"bodies": [{"json": config}]})),
                   format!("bodies[0].json.{message}"));
    }
}

// --- headers ------------------------------------------------------------------------------------

#[test]
fn head_is_the_repr_python_digests() {
    let plain = RuleSet::default();
    assert_eq!(head(&plain, 200, &[]), "(200, ())");
    assert_eq!(head(&plain, 404, &[("Content-Type", "text/html")]),
               "(404, ((b'content-type', b'text/html'),))");
    assert_eq!(head(&plain, 200, &[("b", "it's"), ("a", "\\\t\x7f\u{e9}\"'")]),
               r#"(200, ((b'a', b'\\\t\x7f\xc3\xa9"\''), (b'b', b"it's")))"#);
    assert_eq!(hex(&digest(b"(200, ())", b"{}")),
               "9081c81638fc2738381b84aa842a2395eac19848697874382afdd1e6c0413485");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn headers_are_compared_case_insensitively_without_the_default_noise() {
    let plain = RuleSet::default();
    let a = [("Date", "Mon"), ("Server", "nginx"), ("X-Thing", "1"), ("ETag", "\"a\""),
             ("Content-Length", "10"), ("Cache-Control", "no-store")];
    let b = [("cache-control", "no-store "), ("x-thing", "1"), ("server", "Apache"),
             ("date", "Tue"), ("transfer-encoding", "chunked")];
    assert_eq!(head(&plain, 200, &a), head(&plain, 200, &b));
    assert_eq!(head(&plain, 200, &a),
               "(200, ((b'cache-control', b'no-store'), (b'x-thing', b'1')))");
}

#[test]
fn repeated_headers_keep_their_order() {
    let got = head(&RuleSet::default(), 200, &[("Vary", "b"), ("A", "1"), ("vary", "a")]);
    assert_eq!(got, "(200, ((b'a', b'1'), (b'vary', b'b'), (b'vary', b'a')))");
}

#[test]
fn allow_list_and_presence_only() {
    let r = rules(json!({"headers": {"allow": ["content-type", "location"],
                                     "presence_only": ["Set-Cookie"]}}));
    let got = head(&r, 200, &[("Location", "/x"), ("X-Other", "1"), ("Set-Cookie", "s=1"),
                              ("set-cookie", "t=2")]);
    assert_eq!(got, "(200, ((b'location', b'/x'), (b'set-cookie', b'')))");
    assert_ne!(head(&r, 200, &[]), head(&r, 200, &[("Set-Cookie", "zz")]));
}

#[test]
fn content_type_is_normalised_as_a_media_type() {
    for (value, expected) in [
        ("application/json", "application/json"),
        ("Application/JSON; charset=UTF-8", "application/json"),
        ("application/json;charset=\"utf-8\"", "application/json"),
        ("text/html; Charset=ISO-8859-1", "text/html;charset=iso-8859-1"),
        ("multipart/form-data; boundary=AbC", "multipart/form-data;boundary=AbC"),
        (" text/plain ;; x ; =y", "text/plain;x="),
    ] {
        assert_eq!(head(&RuleSet::default(), 200, &[("Content-Type", value)]),
                   format!("(200, ((b'content-type', b'{expected}'),))"));
    }
    let exact = rules(json!({"headers": {"content_type": "exact"}}));
    assert_eq!(head(&exact, 200, &[("Content-Type", "application/json; charset=utf-8")]),
               "(200, ((b'content-type', b'application/json; charset=utf-8'),))");
}

#[test]
fn headers_ignored_for_some_statuses_only() {
    for status in [json!({"416": ["content-range"]}), json!({"0416": ["Content-Range"]})] {
        let r = rules(json!({"headers": {"ignore_on_status": status}}));
        let with_range = [("Content-Range", "bytes */100"), ("Content-Type", "text/html")];
        let without = [("Content-Type", "text/html")];
        assert_eq!(head(&r, 416, &with_range).replace("416", ""),
                   head(&r, 416, &without).replace("416", ""));
        assert_ne!(head(&r, 206, &with_range), head(&r, 206, &without));
    }
}

// --- compile ----------------------------------------------------------------------------------

#[test]
fn compile_picks_the_first_matching_body_rule() {
    let r = rules(json!({
        "headers": {"ignore": ["x-powered-by"], "presence_only": ["set-cookie"]},
        "bodies": [
            {"path": "/notes*", "content_type": "application/json",
             "json": {"ignore": ["/created_at"], "tolerance": 0.001}},
            {"content_type": "text/", "text": {"masks": [r"\d+"]}},
            {"path": "/raw/*", "exact": null},
            {"json": {}},
        ],
    }));
    let notes = r.body_rule("/notes/7", b"Application/JSON; charset=utf-8", 200);
    assert_eq!(key(notes, r#"{"created_at": 1, "a": 1}"#), r#"{"a":1}"#);
    assert_eq!(key(r.body_rule("/x", b" TEXT/plain", 200), "a1"), "a<masked>");
    assert_eq!(key(r.body_rule("/raw/1", b"application/json", 200), "{ }"), "{ }");
    assert_eq!(key(r.body_rule("/other", b"application/json", 200), r#"{"created_at": 1}"#),
               r#"{"created_at":1}"#);
    assert_eq!(head(&r, 200, &[("X-Powered-By", "1"), ("Date", "x")]), "(200, ())");
}

#[test]
fn a_body_rule_limited_to_statuses_applies_to_those_only() {
    let r = rules(json!({"bodies": [
        {"status": [404, "416"], "text": {"masks": ["(?s)^.*"]}},
        {"status": "٢٠٦", "text": {"masks": [r"\d"]}},
    ]}));
    let page = "<p>Range not satisfiable</p>";
    assert!(agree_text(r.body_rule("/", b"text/html", 416), page, ""));
    assert!(agree_text(r.body_rule("/", b"text/html", 404), page, ""));
    assert!(!agree_text(r.body_rule("/", b"text/html", 200), page, ""));
    assert_eq!(key(r.body_rule("/", b"", 206), "a1"), "a<masked>");
    // An executor that gave no response has no status: only unlimited rules apply to it.
    assert_eq!(key(r.body_rule("/", b"", 0), "a1"), "a1");
}

#[test]
fn default_header_ignores_can_be_switched_off() {
    let r = rules(json!({"headers": {"default_ignore": false, "ignore": ["x-a"]}}));
    assert_eq!(head(&r, 200, &[("Date", "1"), ("X-A", "2")]), "(200, ((b'date', b'1'),))");
}

#[test]
fn globs_read_as_fnmatch_translate_reads_them() {
    for (pattern, yes, no) in [
        ("/a*", &["/a", "/abc", "/a/\n"][..], &["/b", "a"][..]),
        ("/b?", &["/bb", "/b\u{e9}"], &["/b", "/bbb"]),
        ("[!a]*", &["b", "/a"], &["a", ""]),
        ("[]a]", &["]", "a"], &["b"]),
        ("[a-c-e]", &["b", "-", "e"], &["d"]),
        ("[z-a]", &[], &["z", "a", "-"]),
        ("[!]", &["[!]"], &["a"]),
        ("x[", &["x["], &["x"]),
    ] {
        let r = rules(json!({"bodies": [{"path": pattern, "text": {"masks": ["^"]}}]}));
        for path in yes {
            assert_eq!(key(r.body_rule(path, b"", 200), "x"), "<masked>x", "{pattern} {path:?}");
        }
        for path in no {
            assert_eq!(key(r.body_rule(path, b"", 200), "x"), "x", "{pattern} {path:?}");
        }
    }
}

#[test]
fn compile_names_the_bad_field() {
    for (config, message) in [
        (json!({"bodies": [{"json": {}}, {"json": {"ignore": ["created_at"]}}]}),
         "bodies[1].json.ignore[0]: invalid JSON pointer 'created_at': must start with '/'"),
        (json!({"bodies": [{"json": {"tolerence": 1}}]}),
         "bodies[0].json.tolerence: unknown field (expected one of ignore, mask, tolerance, \
          unordered_lists)"),
        (json!({"bodies": [{"json": {"tolerance": "x"}}]}),
         "bodies[0].json.tolerance: must be a finite number >= 0, got 'x'"),
        (json!({"bodies": [{"json": {}, "text": {}}]}),
         "bodies[0]: needs exactly one of json, text or exact"),
        (json!({"bodies": [{"path": 3, "exact": {}}]}),
         "bodies[0].path: expected a string, got int"),
        (json!({"bodies": [{"exact": {"x": 1}}]}),
         "bodies[0].exact.x: unknown field (expected one of )"),
        (json!({"bodies": [{"exact": {}, "pth": "/"}]}),
         "bodies[0].pth: unknown field (expected one of path, content_type, status, exact)"),
        (json!({"bodies": [{"status": 999, "exact": {}}]}),
         "bodies[0].status: 999 is not an HTTP status"),
        (json!({"bodies": [{"status": [200, "4xx"], "exact": {}}]}),
         "bodies[0].status[1]: '4xx' is not an HTTP status"),
        (json!({"bodies": [{"status": [], "exact": {}}]}),
         "bodies[0].status: an empty list matches no response"),
        (json!({"bodies": [{"status": true, "exact": {}}]}),
         "bodies[0].status: True is not an HTTP status"),
        (json!({"bodies": {"json": {}}}), "bodies: expected a list of body rules"),
        (json!({"bodies": ["json"]}), "bodies[0]: expected a mapping, got str"),
        (json!({"bodies": [{"text": {"masks": [1]}}]}), "bodies[0].text.masks[0]: expected a string"),
        (json!({"headers": {"ignore": ["ok", "a b"]}}),
         "headers.ignore[1]: invalid header name 'a b'"),
        (json!({"headers": {"allow": "content-type"}}),
         "headers.allow: expected a list of header names"),
        (json!({"headers": {"allow": [{"a": 1.0}]}}),
         "headers.allow[0]: invalid header name {'a': 1.0}"),
        (json!({"headers": {"presence_only": ["bad name"]}}),
         "headers.presence_only[0]: invalid header name 'bad name'"),
        (json!({"headers": {"content_type": "loose"}}),
         "headers.content_type: must be 'media-type' or 'exact', got 'loose'"),
        (json!({"headers": {"default_ignore": "no"}}),
         "headers.default_ignore: expected true or false"),
        (json!({"header": {}}), "header: unknown field (expected one of headers, bodies)"),
        (json!({"headers": {"ignore_on_status": {"999": ["x"]}}}),
         "headers.ignore_on_status: '999' is not an HTTP status"),
        (json!({"headers": {"ignore_on_status": {"4xx": ["x"]}}}),
         "headers.ignore_on_status: '4xx' is not an HTTP status"),
        (json!({"headers": {"ignore_on_status": {"416": ["bad name"]}}}),
         "headers.ignore_on_status.416[0]: invalid header name 'bad name'"),
        (json!({"headers": {"ignore_on_status": [416]}}),
         "headers.ignore_on_status: expected a mapping, got list"),
    ] {
        assert_eq!(error(config), message);
    }
}

#[test]
fn compile_json_names_the_first_bad_field_in_file_order() {
    let message = RuleSet::compile_json(r#"{"zz": 1, "aa": 2}"#).expect_err("unknown fields");
    assert_eq!(message, "zz: unknown field (expected one of headers, bodies)");
    assert_eq!(RuleSet::compile_json("{").expect_err("not JSON"), "canonicalise: not valid JSON");
}
