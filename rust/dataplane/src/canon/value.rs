//! JSON values as Python holds them after parsing, and the two parsers Python uses: orjson,
//! and `json.loads` for documents with integers orjson would turn into floats.

use super::num::{Int, Num};

/// The deepest nesting of arrays and objects a document may have: orjson encodes no deeper,
/// and Python's recursive walks stay well inside the interpreter's limit up to here.
pub const MAX_DEPTH: usize = 254;

/// Output a parser or encoder refuses: the document's key becomes the invalid key.
#[derive(Debug)]
pub struct Invalid;

/// A string as Python's `str` holds it: WTF-8, so that the lone surrogates `json.loads`
/// accepts survive (they leave a document unencodable unless the rule removes them).
/// Byte order is code point order, as Python compares strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(Box<[u8]>);

impl Text {
    pub fn new(s: &str) -> Text {
        Text(s.as_bytes().into())
    }

    /// ``bytes`` must be UTF-8 but for lone surrogates (WTF-8).
    pub fn from_wtf8(bytes: Vec<u8>) -> Text {
        Text(bytes.into())
    }

    pub fn from_code_points(points: impl IntoIterator<Item = u32>) -> Text {
        let mut out = Vec::new();
        for c in points {
            push_code_point(&mut out, c);
        }
        Text(out.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is(&self, s: &str) -> bool {
        &*self.0 == s.as_bytes()
    }

    /// The text as `str`, unless it holds a lone surrogate.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn has_surrogate(&self) -> bool {
        self.0.windows(2).any(|w| w[0] == 0xED && w[1] >= 0xA0)
    }

    pub fn code_points(&self) -> impl Iterator<Item = u32> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            (i < self.0.len()).then(|| {
                let (c, n) = decode_at(&self.0, i);
                i += n;
                c
            })
        })
    }

    /// For messages that print a name as it is: lone surrogates become U+FFFD.
    pub fn lossy(&self) -> String {
        self.code_points().map(|c| char::from_u32(c).unwrap_or('\u{fffd}')).collect()
    }
}

/// The code point at ``i`` of well-formed UTF-8 or WTF-8, and its length in bytes.
pub fn decode_at(s: &[u8], i: usize) -> (u32, usize) {
    let b = s[i] as u32;
    let cont = |k: usize| (s[i + k] & 0x3f) as u32;
    match b {
        0..=0x7f => (b, 1),
        0xc0..=0xdf => (((b & 0x1f) << 6) | cont(1), 2),
        0xe0..=0xef => (((b & 0x0f) << 12) | (cont(1) << 6) | cont(2), 3),
        _ => (((b & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), 4),
    }
}

fn push_code_point(out: &mut Vec<u8>, c: u32) {
    match c {
        0..=0x7f => out.push(c as u8),
        0x80..=0x7ff => out.extend_from_slice(&[0xc0 | (c >> 6) as u8, 0x80 | (c & 0x3f) as u8]),
        0x800..=0xffff => out.extend_from_slice(&[
            0xe0 | (c >> 12) as u8, 0x80 | ((c >> 6) & 0x3f) as u8, 0x80 | (c & 0x3f) as u8]),
        _ => out.extend_from_slice(&[
            0xf0 | (c >> 18) as u8, 0x80 | ((c >> 12) & 0x3f) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8, 0x80 | (c & 0x3f) as u8]),
    }
}

/// A parsed JSON value. Objects keep insertion order when parsed as configuration and are
/// sorted by key when parsed as a body (the canonical encoding sorts keys anyway).
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(Int),
    Float(f64),
    Str(Text),
    List(Vec<Value>),
    Object(Vec<(Text, Value)>),
}

impl Value {
    /// Numbers, but not booleans (Python's bool is an int; the rules never treat it as one).
    pub fn number(&self) -> Option<Num<'_>> {
        match self {
            Value::Int(i) => Some(Num::Int(i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// Python truthiness, for ``config.get(...) or default``.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => !i.is_zero(),
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.bytes().is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    /// The child under ``key`` of a sorted object.
    pub fn sorted_position(entries: &[(Text, Value)], key: &[u8]) -> Option<usize> {
        entries.binary_search_by(|(k, _)| k.bytes().cmp(key)).ok()
    }
}

/// Which of Python's parsers a document goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// orjson: lone surrogates and numbers that overflow to infinity are errors.
    Orjson,
    /// `json.loads`: exact integers up to 4300 digits, lone surrogates, 1e400 is infinity.
    Json,
}

/// Integers longer than this make `int()` raise in Python (sys.get_int_max_str_digits()).
pub const MAX_INT_DIGITS: usize = 4300;

/// Parse a whole document. ``sorted``: sort object keys (bodies) rather than keep their order
/// (configuration, whose error messages name the first offending key).
pub fn parse(raw: &[u8], dialect: Dialect, sorted: bool) -> Result<Value, Invalid> {
    std::str::from_utf8(raw).map_err(|_| Invalid)?;
    let mut p = Parser { s: raw, i: 0, dialect, sorted, depth: 0 };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i == raw.len() { Ok(v) } else { Err(Invalid) }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    dialect: Dialect,
    sorted: bool,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, Invalid> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(Invalid)
        }
    }

    fn value(&mut self) -> Result<Value, Invalid> {
        match self.peek().ok_or(Invalid)? {
            b'{' => self.object(),
            b'[' => self.list(),
            b'"' => Ok(Value::Str(self.string()?)),
            b'n' => self.literal(b"null", Value::Null),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Invalid),
        }
    }

    fn enter(&mut self) -> Result<(), Invalid> {
        self.i += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(Invalid) } else { Ok(()) }
    }

    fn list(&mut self) -> Result<Value, Invalid> {
        self.enter()?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                items.push(self.value()?);
                self.ws();
                match self.peek() {
                    Some(b',') => { self.i += 1; self.ws(); }
                    Some(b']') => { self.i += 1; break; }
                    _ => return Err(Invalid),
                }
            }
        }
        self.depth -= 1;
        Ok(Value::List(items))
    }

    fn object(&mut self) -> Result<Value, Invalid> {
        self.enter()?;
        let mut entries: Vec<(Text, Value)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(Invalid);
                }
                let key = self.string()?;
                self.ws();
                if self.peek() != Some(b':') {
                    return Err(Invalid);
                }
                self.i += 1;
                self.ws();
                let v = self.value()?;
                if self.sorted {
                    entries.push((key, v));
                } else if let Some(e) = entries.iter_mut().find(|e| e.0 == key) {
                    e.1 = v; // a dict keeps the first position and the last value
                } else {
                    entries.push((key, v));
                }
                self.ws();
                match self.peek() {
                    Some(b',') => { self.i += 1; self.ws(); }
                    Some(b'}') => { self.i += 1; break; }
                    _ => return Err(Invalid),
                }
            }
        }
        self.depth -= 1;
        if self.sorted && !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut unique: Vec<(Text, Value)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                match unique.last_mut() {
                    Some(last) if last.0 == k => last.1 = v, // the last value wins
                    _ => unique.push((k, v)),
                }
            }
            entries = unique;
        }
        Ok(Value::Object(entries))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.s.get(at..at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    }

    fn string(&mut self) -> Result<Text, Invalid> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let start = self.i;
            while matches!(self.peek(), Some(c) if c != b'"' && c != b'\\' && c >= 0x20) {
                self.i += 1;
            }
            if out.is_empty() && self.peek() == Some(b'"') {
                // Most strings have no escape: one allocation of the exact size.
                self.i += 1;
                return Ok(Text(self.s[start..self.i - 1].into()));
            }
            out.extend_from_slice(&self.s[start..self.i]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Text(out.into()));
                }
                Some(b'\\') => self.escape(&mut out)?,
                _ => return Err(Invalid), // end of input or a raw control character
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Invalid> {
        let c = *self.s.get(self.i + 1).ok_or(Invalid)?;
        self.i += 2;
        let simple = match c {
            b'"' | b'\\' | b'/' => c,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex4(self.i).ok_or(Invalid)?;
                self.i += 4;
                let cp = match unit {
                    0xd800..=0xdbff if self.s[self.i..].starts_with(b"\\u") => {
                        let low = self.hex4(self.i + 2).ok_or(Invalid)?;
                        if (0xdc00..=0xdfff).contains(&low) {
                            self.i += 6;
                            0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                        } else {
                            self.lone(unit)?
                        }
                    }
                    0xd800..=0xdfff => self.lone(unit)?,
                    _ => unit,
                };
                push_code_point(out, cp);
                return Ok(());
            }
            _ => return Err(Invalid),
        };
        out.push(simple);
        Ok(())
    }

    fn lone(&self, unit: u32) -> Result<u32, Invalid> {
        match self.dialect {
            Dialect::Orjson => Err(Invalid),
            Dialect::Json => Ok(unit),
        }
    }

    fn number(&mut self) -> Result<Value, Invalid> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let whole = match self.peek() {
            Some(b'0') => { self.i += 1; 1 }
            Some(b'1'..=b'9') => digits(self),
            _ => return Err(Invalid),
        };
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(Invalid);
            }
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Invalid);
            }
            float = true;
        }
        // The grammar was checked byte by byte, so the text is ASCII.
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| Invalid)?;
        if !float {
            return if whole > MAX_INT_DIGITS { Err(Invalid) } else { Ok(Value::Int(Int::parse(text))) };
        }
        let f: f64 = text.parse().map_err(|_| Invalid)?;
        if f.is_infinite() && self.dialect == Dialect::Orjson {
            return Err(Invalid);
        }
        Ok(Value::Float(f))
    }
}
