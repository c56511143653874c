//! Python's `repr` of the values the canonicaliser shows: bytes for an output's head (the
//! digest covers it), strings and configuration values for error messages.

use std::sync::OnceLock;

use super::num::write_python_float;
use super::value::{Text, Value};

/// ``repr(b)``: single quotes unless only double quotes avoid escaping one.
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { b'"' } else { b'\'' };
    out.push(b'b');
    out.push(quote);
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ if c == quote => out.extend_from_slice(&[b'\\', c]),
            0x20..=0x7e => out.push(c),
            _ => write_hex(out, b"\\x", c as u32, 2),
        }
    }
    out.push(quote);
}

fn write_hex(out: &mut Vec<u8>, prefix: &[u8], value: u32, width: usize) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(format!("{value:0width$x}").as_bytes());
}

/// Whether Python's `str.isprintable` holds for a non-ASCII code point: not in categories
/// Cc, Cf, Cs, Co, Cn, Zl, Zp or Zs.
fn printable(c: u32) -> bool {
    static HIDDEN: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let Some(c) = char::from_u32(c) else { return false }; // a lone surrogate (Cs)
    let hidden = HIDDEN.get_or_init(|| {
        regex::Regex::new(r"[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]").ok()
    });
    let mut buffer = [0; 4];
    !hidden.as_ref().is_some_and(|h| h.is_match(c.encode_utf8(&mut buffer)))
}

/// ``repr(s)`` of a Python string.
pub fn text(s: &Text) -> String {
    let b = s.bytes();
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { b'"' } else { b'\'' };
    let mut out = vec![quote];
    for c in s.code_points() {
        match c {
            0x5c => out.extend_from_slice(b"\\\\"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ if c == quote as u32 => out.extend_from_slice(&[b'\\', quote]),
            0x20..=0x7e => out.push(c as u8),
            _ if c >= 0x80 && printable(c) => {
                let mut buffer = [0; 4];
                if let Some(ch) = char::from_u32(c) {
                    out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
                }
            }
            0..=0xff => write_hex(&mut out, b"\\x", c, 2),
            0x100..=0xffff => write_hex(&mut out, b"\\u", c, 4),
            _ => write_hex(&mut out, b"\\U", c, 8),
        }
    }
    out.push(quote);
    String::from_utf8_lossy(&out).into_owned()
}

/// ``repr(v)`` of a value as `json.loads` returns it.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => {
            let mut out = Vec::new();
            i.write(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
        Value::Float(f) => {
            let mut out = Vec::new();
            write_python_float(&mut out, *f, false);
            String::from_utf8_lossy(&out).into_owned()
        }
        Value::Str(s) => text(s),
        Value::List(items) => {
            format!("[{}]", items.iter().map(value).collect::<Vec<_>>().join(", "))
        }
        Value::Object(entries) => format!("{{{}}}", entries.iter()
            .map(|(k, v)| format!("{}: {}", text(k), value(v))).collect::<Vec<_>>().join(", ")),
    }
}

/// ``type(v).__name__``.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::List(_) => "list",
        Value::Object(_) => "dict",
    }
}
