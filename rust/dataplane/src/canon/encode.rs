//! The canonical encoding of a JSON value: ``orjson.dumps(v, option=OPT_SORT_KEYS)``, or, for
//! what orjson refuses (integers beyond 64 bits), ``json.dumps(v, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False).encode()`` as Python falls back to.

use super::num::{write_orjson_float, write_python_float};
use super::value::{Invalid, Text, Value};

/// Which encoder's spelling of floats applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoder {
    Orjson,
    Json,
}

enum Stop {
    /// orjson refuses the value; `json.dumps` takes it.
    Fallback,
    /// Neither can produce UTF-8 (a lone surrogate): Python's ``encode()`` raises.
    Invalid,
}

/// Python's `_encode`: compact, keys sorted, UTF-8.
pub fn encode(v: &Value) -> Result<Vec<u8>, Invalid> {
    let mut out = Vec::new();
    match write(&mut out, v, Encoder::Orjson) {
        Ok(()) => Ok(out),
        Err(Stop::Invalid) => Err(Invalid),
        Err(Stop::Fallback) => {
            out.clear();
            write(&mut out, v, Encoder::Json).map_err(|_| Invalid)?;
            Ok(out)
        }
    }
}

fn write(out: &mut Vec<u8>, v: &Value, encoder: Encoder) -> Result<(), Stop> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => {
            if encoder == Encoder::Orjson && !i.fits_orjson() {
                return Err(Stop::Fallback);
            }
            i.write(out);
        }
        Value::Float(f) => match encoder {
            Encoder::Orjson => write_orjson_float(out, *f),
            Encoder::Json => write_python_float(out, *f, true),
        },
        Value::Str(s) => write_str(out, s)?,
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item, encoder)?;
            }
            out.push(b']');
        }
        Value::Object(entries) => {
            // Body objects are kept sorted by key from parsing on.
            out.push(b'{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k)?;
                out.push(b':');
                write(out, item, encoder)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &Text) -> Result<(), Stop> {
    if s.has_surrogate() {
        return Err(Stop::Invalid);
    }
    let b = s.bytes();
    out.push(b'"');
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let escape: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{c:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
    Ok(())
}
