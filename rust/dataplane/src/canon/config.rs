//! Compiling the ``canonicalise`` configuration (mirrors `compile_rules` in
//! `endosec.core.canonicalise`): the same checks in the same order, so a bad configuration is
//! refused with the message Python gives for it.

use std::sync::{Arc, OnceLock};

use regex::Regex;

use super::glob::Glob;
use super::headers::{HeaderRule, Names, DEFAULT_IGNORED_HEADERS};
use super::json::{is_nonnegative_finite, Act, JsonRule, Segment};
use super::num::Int;
use super::pyrepr::{text as repr_text, type_name, value as repr};
use super::text::TextRule;
use super::value::{Text, Value, MAX_INT_DIGITS};
use super::{BodyMatch, BodyRule, Kind, RuleSet};

type Map = [(Text, Value)];

fn get<'a>(map: &'a Map, key: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.is(key)).map(|(_, v)| v)
}

/// `_mapping`: null is an empty mapping.
fn mapping<'a>(value: Option<&'a Value>, at: &str) -> Result<&'a Map, String> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Object(m)) => Ok(m),
        Some(v) => Err(format!("{at}: expected a mapping, got {}", type_name(v))),
    }
}

fn known(map: &Map, at: &str, allowed: &[&str]) -> Result<(), String> {
    for (key, _) in map {
        if !allowed.iter().any(|a| key.is(a)) {
            let prefix = if at.is_empty() { String::new() } else { format!("{at}.") };
            return Err(format!("{prefix}{}: unknown field (expected one of {})", key.lossy(),
                               allowed.join(", ")));
        }
    }
    Ok(())
}

fn string(map: &Map, key: &str, at: &str, default: &str) -> Result<Text, String> {
    match get(map, key) {
        None => Ok(Text::new(default)),
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(v) => Err(format!("{at}.{key}: expected a string, got {}", type_name(v))),
    }
}

/// ``config.get(key) or []`` that must then be a list: None if it is something else.
fn list_or_nothing(value: Option<&Value>) -> Option<&[Value]> {
    match value {
        Some(Value::List(items)) => Some(items),
        Some(v) if v.truthy() => None,
        _ => Some(&[]),
    }
}

/// `header_names`: a list of HTTP tokens, lower-cased.
fn header_names(field: &str, names: &Value) -> Result<Names, String> {
    match names {
        Value::List(items) => header_list(field, items),
        _ => Err(format!("{field}: expected a list of header names")),
    }
}

fn header_list(field: &str, items: &[Value]) -> Result<Names, String> {
    let mut out = Names::default();
    for (i, name) in items.iter().enumerate() {
        match name {
            Value::Str(s) if !s.bytes().is_empty() && s.bytes().iter().all(|&c| {
                c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
            }) => out.insert(&s.bytes().to_ascii_lowercase()),
            _ => return Err(format!("{field}[{i}]: invalid header name {}", repr(name))),
        }
    }
    Ok(out)
}

fn header_rule(config: &Map) -> Result<HeaderRule, String> {
    known(config, "headers", &["ignore", "default_ignore", "allow", "presence_only",
                               "content_type", "ignore_on_status"])?;
    let default_ignore = match get(config, "default_ignore") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("headers.default_ignore: expected true or false".into()),
    };
    let ignore = list_or_nothing(get(config, "ignore"))
        .ok_or("headers.ignore: expected a list of header names")?;
    header_fields(config, ignore, default_ignore).map_err(|message| {
        if message.starts_with("headers.") { message } else { format!("headers.{message}") }
    })
}

fn header_fields(config: &Map, ignore: &[Value], default_ignore: bool)
                 -> Result<HeaderRule, String> {
    let mut names = header_list("ignore", ignore)?;
    if default_ignore {
        for name in DEFAULT_IGNORED_HEADERS {
            names.insert(name.as_bytes());
        }
    }
    let on_status = mapping(get(config, "ignore_on_status"), "headers.ignore_on_status")?;
    let content_type = string(config, "content_type", "headers", "media-type")?;
    let allow = match get(config, "allow") {
        None | Some(Value::Null) => None,
        Some(v) => Some(header_names("allow", v)?),
    };
    let presence = match list_or_nothing(get(config, "presence_only")) {
        Some(items) => header_list("presence_only", items)?,
        None => return Err("presence_only: expected a list of header names".into()),
    };
    let mut statuses: Vec<(u16, Names)> = Vec::new();
    for (key, listed) in on_status {
        let status = status(key)?
            .ok_or_else(|| format!("ignore_on_status: {} is not an HTTP status", repr_text(key)))?;
        let extra = header_names(&format!("ignore_on_status.{status}"), listed)?;
        let set = names.union(&extra);
        match statuses.binary_search_by_key(&status, |(s, _)| *s) {
            Ok(at) => statuses[at].1 = set,
            Err(at) => statuses.insert(at, (status, set)),
        }
    }
    let media_type = if content_type.is("media-type") {
        true
    } else if content_type.is("exact") {
        false
    } else {
        return Err(format!("content_type: must be 'media-type' or 'exact', got {}",
                           repr_text(&content_type)));
    };
    Ok(HeaderRule { ignore: names, on_status: statuses, allow, presence, media_type })
}

/// A status spelled as a key: ``int(key)`` when ``key.isdigit()`` (decimal digits of any
/// script), kept only within 100-599.
fn status(key: &Text) -> Result<Option<u16>, String> {
    static DECIMAL: OnceLock<Option<Regex>> = OnceLock::new();
    let decimal = DECIMAL.get_or_init(|| Regex::new(r"^\p{Nd}$").ok());
    let is_decimal = |c: u32| {
        let mut buffer = [0; 4];
        char::from_u32(c).is_some_and(|ch| {
            decimal.as_ref().is_some_and(|d| d.is_match(ch.encode_utf8(&mut buffer)))
        })
    };
    let digits: Vec<u32> = key.code_points().collect();
    if digits.is_empty() || !digits.iter().all(|&c| is_decimal(c)) {
        return Ok(None);
    }
    if digits.len() > MAX_INT_DIGITS {
        return Err(format!("Exceeds the limit ({MAX_INT_DIGITS} digits) for integer string \
                            conversion: value has {} digits; use sys.set_int_max_str_digits() \
                            to increase the limit", digits.len()));
    }
    let mut value: u32 = 0;
    for c in digits {
        // Decimal digits come in runs of ten from zero: the value is the offset in the run.
        let mut zero = c;
        while zero > 0 && is_decimal(zero - 1) {
            zero -= 1;
        }
        value = value.saturating_mul(10).saturating_add((c - zero) % 10);
    }
    Ok(u16::try_from(value).ok().filter(|s| (100..=599).contains(s)))
}

fn compile_path(text: &Value) -> Result<Vec<Segment>, String> {
    let Value::Str(text) = text else {
        return Err(format!("a path must be a string, got {}", type_name(text)));
    };
    let bytes = text.bytes();
    if bytes.first() != Some(&b'/') {
        return Err(format!("invalid JSON pointer {}: must start with '/'", repr_text(text)));
    }
    let mut segments = Vec::new();
    for escaped in bytes[1..].split(|&b| b == b'/') {
        let bad_tilde = escaped.iter().enumerate()
            .any(|(i, &b)| b == b'~' && !matches!(escaped.get(i + 1), Some(b'0' | b'1')));
        if bad_tilde {
            return Err(format!("invalid JSON pointer {}: '~' must be followed by 0 or 1",
                               repr_text(text)));
        }
        let mut part = Vec::with_capacity(escaped.len());
        let mut i = 0;
        while i < escaped.len() {
            if escaped[i] == b'~' {
                part.push(if escaped[i + 1] == b'1' { b'/' } else { b'~' });
                i += 2;
            } else {
                part.push(escaped[i]);
                i += 1;
            }
        }
        let part = Text::from_wtf8(part);
        if part.is("**") {
            if !matches!(segments.last(), Some(Segment::Deep)) {
                segments.push(Segment::Deep);
            }
        } else if part.is("*") {
            segments.push(Segment::Any);
        } else if part.bytes().iter().any(|b| b"*?[".contains(b)) {
            segments.push(Segment::Glob(Glob::new(part.code_points())));
        } else {
            segments.push(Segment::Key(part));
        }
    }
    if matches!(segments.last(), Some(Segment::Deep)) {
        return Err(format!("invalid JSON pointer {}: a path cannot end in '**'",
                           repr_text(text)));
    }
    Ok(segments)
}

fn json_rule(body: &Map) -> Result<JsonRule, String> {
    let unordered = get(body, "unordered_lists").unwrap_or(&Value::Bool(false));
    let sort_paths: Option<&Value> = match unordered {
        Value::Bool(_) => None,
        v => Some(v),
    };
    let mut program = Vec::new();
    for (name, paths, act) in [("ignore", list_or_nothing(get(body, "ignore")), Act::Ignore),
                               ("mask", list_or_nothing(get(body, "mask")), Act::Mask),
                               ("unordered_lists", match sort_paths {
                                   None => Some(&[][..]),
                                   Some(Value::List(items)) => Some(&items[..]),
                                   Some(_) => None,
                               }, Act::Sort)] {
        let paths = paths.ok_or_else(|| format!("{name}: expected a list of paths"))?;
        for (i, text) in paths.iter().enumerate() {
            let path = compile_path(text).map_err(|e| format!("{name}[{i}]: {e}"))?;
            program.push((path, act));
        }
    }
    let tolerance = get(body, "tolerance").cloned().unwrap_or(Value::Float(0.0));
    if !is_nonnegative_finite(&tolerance) {
        return Err(format!("tolerance: must be a finite number >= 0, got {}", repr(&tolerance)));
    }
    Ok(JsonRule::new(program, tolerance, matches!(unordered, Value::Bool(true))))
}

fn text_rule(body: &Map) -> Result<TextRule, String> {
    let masks = list_or_nothing(get(body, "masks"))
        .ok_or("masks: expected a list of regular expressions")?;
    let mut patterns = Vec::with_capacity(masks.len());
    for (i, mask) in masks.iter().enumerate() {
        let Value::Str(text) = mask else { return Err(format!("masks[{i}]: expected a string")) };
        let compiled = match text.as_str() {
            Some(s) if multiple_repeat(s).is_some() => Err(format!(
                "multiple repeat at position {}", multiple_repeat(s).unwrap_or_default())),
            Some(s) => Regex::new(s).map_err(|e| {
                let e = e.to_string();
                let reason = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                reason.to_string()
            }),
            None => Err("a lone surrogate cannot be matched".to_string()),
        };
        patterns.push(compiled.map_err(|e| {
            format!("masks[{i}]: invalid regular expression {}: {e}", repr_text(text))
        })?);
    }
    Ok(TextRule::new(patterns))
}

/// Where Python's `re` would refuse a quantifier applied to a quantifier (``a**``, ``a+*``,
/// ``a{2}*``, ``a*??``), which the regex crate reads as one: the position (in characters) of
/// the second. Lazy (``*?``) and possessive (``*+``) suffixes belong to the first.
fn multiple_repeat(pattern: &str) -> Option<usize> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut class = false;
    let mut quantified = false; // the previous token was a complete quantifier
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            quantified = false;
            continue;
        }
        if class {
            class = c != ']';
            i += 1;
            continue;
        }
        let counted = c == '{' && counted_end(&chars, i).is_some();
        if matches!(c, '*' | '+' | '?') || counted {
            if quantified {
                return Some(i);
            }
            if c == '?' && i > 0 && chars[i - 1] == '(' {
                i += 1; // a group's extension, not a quantifier
                continue;
            }
            i = if counted { counted_end(&chars, i).unwrap_or(i) + 1 } else { i + 1 };
            if matches!(chars.get(i), Some('?' | '+')) {
                i += 1;
            }
            quantified = true;
            continue;
        }
        if c == '[' {
            class = true;
            i += 1;
            if chars.get(i) == Some(&'^') {
                i += 1;
            }
            if chars.get(i) == Some(&']') {
                i += 1; // a leading ] is a member
            }
            quantified = false;
            continue;
        }
        quantified = false;
        i += 1;
    }
    None
}

/// The index of the ``}`` closing a counted repetition ``{m}``, ``{m,}``, ``{,n}``, ``{m,n}``.
fn counted_end(chars: &[char], open: usize) -> Option<usize> {
    let close = open + chars[open..].iter().position(|&c| c == '}')?;
    let inner: String = chars[open + 1..close].iter().collect();
    let (lo, hi) = inner.split_once(',').unwrap_or((&inner, &inner));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    (!inner.is_empty() && inner != "," && digits(lo) && digits(hi)).then_some(close)
}

fn body_rule(config: &Map, at: &str) -> Result<BodyMatch, String> {
    let kinds: Vec<&str> = ["json", "text", "exact"].into_iter()
        .filter(|k| get(config, k).is_some()).collect();
    let [kind] = kinds[..] else {
        return Err(format!("{at}: needs exactly one of json, text or exact"));
    };
    known(config, at, &["path", "content_type", "status", kind])?;
    let body = mapping(get(config, kind), &format!("{at}.{kind}"))?;
    let rule = match kind {
        "json" => known(body, &format!("{at}.json"),
                        &["ignore", "mask", "tolerance", "unordered_lists"])
            .and_then(|()| json_rule(body)).map(Kind::Json),
        "text" => known(body, &format!("{at}.text"), &["masks"])
            .and_then(|()| text_rule(body)).map(Kind::Text),
        _ => known(body, &format!("{at}.exact"), &[]).map(|()| Kind::Exact),
    }.map_err(|message| {
        if message.starts_with(at) { message } else { format!("{at}.{kind}.{message}") }
    })?;
    let path = string(config, "path", at, "*")?;
    let content_type = string(config, "content_type", at, "")?;
    let statuses = match get(config, "status") {
        None => Vec::new(),
        Some(value) => statuses(value, &format!("{at}.status"))?,
    };
    Ok(BodyMatch {
        path: Glob::new(path.code_points()),
        content_type: python_lower(python_strip(&content_type)),
        statuses,
        rule: Arc::new(BodyRule { kind: rule }),
    })
}

/// `_statuses`: a body rule's ``status``, one status or a non-empty list of them.
fn statuses(value: &Value, at: &str) -> Result<Vec<u16>, String> {
    let (items, listed) = match value {
        Value::List(items) => (&items[..], true),
        one => (std::slice::from_ref(one), false),
    };
    if items.is_empty() {
        return Err(format!("{at}: an empty list matches no response"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = if listed { format!("{at}[{i}]") } else { at.to_owned() };
        let status = match item {
            Value::Str(text) => status(text).map_err(|e| format!("{here}: {e}"))?,
            Value::Int(Int::Small(n)) => u16::try_from(*n).ok().filter(|s| (100..=599).contains(s)),
            _ => None,
        };
        out.push(status.ok_or_else(|| format!("{here}: {} is not an HTTP status", repr(item)))?);
    }
    Ok(out)
}

/// ``str.isspace``: Unicode White_Space plus the information separators U+001C..U+001F.
pub fn python_space(c: u32) -> bool {
    (0x1c..=0x1f).contains(&c) || char::from_u32(c).is_some_and(char::is_whitespace)
}

/// ``str.strip()``.
fn python_strip(t: &Text) -> Vec<u32> {
    let points: Vec<u32> = t.code_points().collect();
    let start = points.iter().position(|&c| !python_space(c)).unwrap_or(points.len());
    let end = points.iter().rposition(|&c| !python_space(c)).map_or(start, |e| e + 1);
    points[start..end].to_vec()
}

/// ``str.lower()``, as UTF-8 (WTF-8 where a lone surrogate stays).
fn python_lower(points: Vec<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut run = String::new();
    for c in points {
        match char::from_u32(c) {
            Some(ch) => run.push(ch),
            None => {
                out.extend_from_slice(run.to_lowercase().as_bytes());
                run.clear();
                out.extend_from_slice(Text::from_code_points([c]).bytes());
            }
        }
    }
    out.extend_from_slice(run.to_lowercase().as_bytes());
    out
}

/// `compile_rules`.
pub fn compile(config: &Value) -> Result<RuleSet, String> {
    let config = mapping(Some(config), "canonicalise")?;
    known(config, "", &["headers", "bodies"])?;
    let headers = header_rule(mapping(get(config, "headers"), "headers")?)?;
    let bodies = list_or_nothing(get(config, "bodies")).ok_or("bodies: expected a list of body rules")?;
    let mut rules = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.iter().enumerate() {
        let at = format!("bodies[{i}]");
        rules.push(body_rule(mapping(Some(body), &at)?, &at)?);
    }
    Ok(RuleSet { headers, bodies: rules, ..RuleSet::default() })
}
