//! The JSON body rule (mirrors `endosec.core.canonical_json`): agree on a document's value,
//! forgiving configured fields (ignored or masked by pointer or glob path), list order and
//! numeric rounding. Plain pointers are applied one by one; a glob program walks the document.

use std::cmp::Ordering;
use std::sync::Arc;

use super::encode::encode;
use super::glob::Glob;
use super::num::{compare, within, Int, Num};
use super::value::{parse, Dialect, Invalid, Text, Value};
use super::{Canonical, INVALID_PREFIX, MASK_TOKEN};

/// One segment of a path: a key or index, an fnmatch pattern, ``*`` or ``**``.
#[derive(Clone, Debug)]
pub enum Segment {
    Key(Text),
    Glob(Glob),
    Any,
    Deep,
}

impl Segment {
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Segment::Key(k) => k.bytes() == name,
            Segment::Glob(g) => g.matches(name),
            Segment::Any | Segment::Deep => true,
        }
    }
}

/// What a path does to what it reaches; the lower wins where several reach one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Act {
    Ignore,
    Mask,
    Sort,
}

/// A program state: (path, position in it).
type State = (usize, usize);

#[derive(Debug)]
pub struct JsonRule {
    program: Vec<(Vec<Segment>, Act)>,
    start: Vec<State>,
    /// The program as plain pointers in application order, when no path has a wildcard.
    pointers: Option<Vec<(Vec<Text>, Act)>>,
    /// Kept as configured (an int or a float): Python compares it exactly.
    tolerance: Value,
    sort_all: bool,
}

/// RFC 6901 array index: decimal digits without a leading zero, below ``length``.
fn index(segment: &[u8], length: usize) -> Option<usize> {
    let ok = !segment.is_empty() && segment.iter().all(u8::is_ascii_digit)
        && (segment == b"0" || segment[0] != b'0');
    let i: usize = std::str::from_utf8(segment).ok().filter(|_| ok)?.parse().ok()?;
    (i < length).then_some(i)
}

impl JsonRule {
    /// ``tolerance`` has been checked: a finite number >= 0.
    pub fn new(program: Vec<(Vec<Segment>, Act)>, tolerance: Value, sort_all: bool) -> JsonRule {
        let start = closure(&program, (0..program.len()).map(|p| (p, 0)));
        let pointers = literal_program(&program);
        JsonRule { program, start, pointers, tolerance, sort_all }
    }

    pub fn canonicalise(&self, raw: &[u8]) -> Canonical {
        match self.edited(raw) {
            Ok((key, value)) => {
                let tolerant = self.tolerance.truthy();
                Canonical { key, value: tolerant.then(|| Arc::new(value)), ttls: Vec::new() }
            }
            Err(Invalid) => {
                let mut key = Vec::with_capacity(INVALID_PREFIX.len() + raw.len());
                key.extend_from_slice(INVALID_PREFIX);
                key.extend_from_slice(raw);
                Canonical::bytes(key)
            }
        }
    }

    /// ``raw`` parsed and encoded again, nothing edited (None: it does not parse).
    pub fn reencode(&self, raw: &[u8]) -> Option<Vec<u8>> {
        encode(&parse(raw, dialect(raw), true).ok()?).ok()
    }

    fn edited(&self, raw: &[u8]) -> Result<(Vec<u8>, Value), Invalid> {
        let mut value = parse(raw, dialect(raw), true)?;
        match &self.pointers {
            Some(pointers) => apply_pointers(&mut value, pointers)?,
            None => self.edit(&mut value, &self.start)?,
        }
        if self.sort_all {
            sort_all(&mut value)?;
        }
        Ok((encode(&value)?, value))
    }

    pub fn equivalent(&self, a: &Canonical, b: &Canonical) -> bool {
        if a.key == b.key {
            return true;
        }
        let Some(tolerance) = self.tolerance.number() else { return false };
        match (&a.value, &b.value) {
            (Some(x), Some(y)) => close(x, y, tolerance),
            _ => false, // no tolerance, or an invalid document
        }
    }

    /// Apply the program below ``node`` in one walk.
    fn edit(&self, node: &mut Value, states: &[State]) -> Result<(), Invalid> {
        let len = match node {
            Value::Object(e) => e.len(),
            Value::List(l) => l.len(),
            _ => return Ok(()),
        };
        let literal: Vec<&Text> = states.iter().filter_map(|&(p, pos)| match &self.program[p].0[pos] {
            Segment::Key(k) => Some(k),
            _ => None,
        }).collect();
        let keys: Vec<usize> = if literal.len() == states.len() {
            // no wildcard: visit only the named children
            let mut keys: Vec<usize> = match node {
                Value::Object(e) => literal.iter()
                    .filter_map(|k| Value::sorted_position(e, k.bytes())).collect(),
                _ => literal.iter().filter_map(|k| index(k.bytes(), len)).collect(),
            };
            keys.sort_unstable();
            keys.dedup();
            keys
        } else {
            (0..len).collect()
        };
        let mut drop = Vec::new();
        let mut digits = [0u8; 20];
        for key in keys {
            let (name, child) = match node {
                Value::Object(e) => {
                    let (k, v) = &mut e[key];
                    (k.bytes(), v)
                }
                Value::List(l) => (decimal(key, &mut digits), &mut l[key]),
                _ => unreachable!("only containers have children"),
            };
            let mut act: Option<Act> = None;
            let mut next = Vec::new();
            for &(p, pos) in states {
                let (path, action) = &self.program[p];
                let segment = &path[pos];
                if matches!(segment, Segment::Deep) {
                    next.push((p, pos));
                } else if segment.matches(name) {
                    if pos + 1 == path.len() {
                        act = Some(act.map_or(*action, |a| a.min(*action)));
                    } else {
                        next.push((p, pos + 1));
                    }
                }
            }
            match act {
                Some(Act::Ignore) => drop.push(key),
                Some(Act::Mask) => *child = Value::Str(Text::new(MASK_TOKEN)),
                _ => {
                    if !next.is_empty() {
                        self.edit(child, &closure(&self.program, next))?;
                    }
                    if act == Some(Act::Sort) {
                        if let Value::List(items) = child {
                            sort(items)?;
                        }
                    }
                }
            }
        }
        match node {
            Value::Object(e) => remove_all(e, &drop),
            Value::List(l) => remove_all(l, &drop),
            _ => {}
        }
        Ok(())
    }
}

/// A list index as the walk names it (``str(i)``), without allocating.
fn decimal(mut n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// Remove the elements at ``drop`` (ascending positions) in one pass.
fn remove_all<T>(items: &mut Vec<T>, drop: &[usize]) {
    let mut position = 0;
    let mut next = drop.iter().peekable();
    items.retain(|_| {
        let gone = next.next_if_eq(&&position).is_some();
        position += 1;
        !gone
    });
}

/// orjson, unless a run of 19 digits may be an integer orjson would turn into a float.
fn dialect(raw: &[u8]) -> Dialect {
    let mut run = 0;
    for &b in raw {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run == 19 {
            return Dialect::Json;
        }
    }
    Dialect::Orjson
}

/// Add the states reached by letting each ``**`` match zero levels.
fn closure(program: &[(Vec<Segment>, Act)], states: impl IntoIterator<Item = State>) -> Vec<State> {
    let mut out: Vec<State> = Vec::new();
    for (p, start) in states {
        let path = &program[p].0;
        let mut pos = start;
        loop {
            if !out.contains(&(p, pos)) {
                out.push((p, pos));
            }
            if !matches!(path[pos], Segment::Deep) {
                break;
            }
            pos += 1;
        }
    }
    out
}

/// Plain pointers, ordered so applying them one by one equals the walk: masks first, then
/// removals and sorts deepest first and from the last index back.
fn literal_program(program: &[(Vec<Segment>, Act)]) -> Option<Vec<(Vec<Text>, Act)>> {
    let mut plain: Vec<(Vec<Text>, Act)> = Vec::new();
    for (path, act) in program {
        let keys = path.iter().map(|s| match s {
            Segment::Key(k) => Some(k.clone()),
            _ => None,
        }).collect::<Option<Vec<Text>>>()?;
        let entry = (keys, *act);
        if !plain.contains(&entry) {
            plain.push(entry);
        }
    }
    plain.sort_by(|(pa, aa), (pb, ab)| match (*aa == Act::Mask, *ab == Act::Mask) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => post_order(pa, pb).then((*aa == Act::Ignore).cmp(&(*ab == Act::Ignore))),
    });
    Some(plain)
}

/// Later siblings first, children before their parent: no index shifts under a later edit.
fn post_order(a: &[Text], b: &[Text]) -> Ordering {
    /// (class, -index, name); a path's end sorts after any child segment.
    fn rank(s: Option<&Text>) -> (u8, i128, &[u8]) {
        match s {
            None => (2, 0, b""),
            Some(t) => match index(t.bytes(), 1 << 62) {
                Some(i) => (0, -(i as i128), b""),
                None => (1, 0, t.bytes()),
            },
        }
    }
    for i in 0..=a.len().max(b.len()) {
        let ord = rank(a.get(i)).cmp(&rank(b.get(i)));
        if ord != Ordering::Equal || (i >= a.len() && i >= b.len()) {
            return ord;
        }
    }
    Ordering::Equal
}

fn step<'v>(node: &'v mut Value, segment: &Text) -> Option<&'v mut Value> {
    match node {
        Value::Object(e) => Value::sorted_position(e, segment.bytes()).map(|at| &mut e[at].1),
        Value::List(l) => index(segment.bytes(), l.len()).map(|at| &mut l[at]),
        _ => None,
    }
}

fn apply_pointers(root: &mut Value, pointers: &[(Vec<Text>, Act)]) -> Result<(), Invalid> {
    for (path, act) in pointers {
        let Some((last, parents)) = path.split_last() else { continue };
        let mut node = Some(&mut *root);
        for segment in parents {
            node = node.and_then(|n| step(n, segment));
        }
        let Some(node) = node else { continue };
        match act {
            Act::Ignore => match node {
                Value::Object(e) => {
                    if let Some(at) = Value::sorted_position(e, last.bytes()) {
                        e.remove(at);
                    }
                }
                Value::List(l) => {
                    if let Some(at) = index(last.bytes(), l.len()) {
                        l.remove(at);
                    }
                }
                _ => {}
            },
            Act::Mask => {
                if let Some(child) = step(node, last) {
                    *child = Value::Str(Text::new(MASK_TOKEN));
                }
            }
            Act::Sort => {
                if let Some(Value::List(items)) = step(node, last) {
                    sort(items)?;
                }
            }
        }
    }
    Ok(())
}

fn sort_all(node: &mut Value) -> Result<(), Invalid> {
    match node {
        Value::Object(e) => e.iter_mut().try_for_each(|(_, child)| sort_all(child)),
        Value::List(items) => {
            items.iter_mut().try_for_each(sort_all)?;
            sort(items)
        }
        _ => Ok(()),
    }
}

/// Python's `_order`: numbers by value, then strings, then the rest by their encoding.
enum OrderKey<'a> {
    Number(Num<'a>),
    Str(&'a Text),
    Other(Vec<u8>),
}

impl OrderKey<'_> {
    fn order(&self, other: &OrderKey<'_>) -> Ordering {
        match (self, other) {
            (OrderKey::Number(a), OrderKey::Number(b)) => compare(*a, *b).unwrap_or(Ordering::Equal),
            (OrderKey::Str(a), OrderKey::Str(b)) => a.cmp(b),
            (OrderKey::Other(a), OrderKey::Other(b)) => a.cmp(b),
            (OrderKey::Number(_), _) | (OrderKey::Str(_), OrderKey::Other(_)) => Ordering::Less,
            _ => Ordering::Greater,
        }
    }
}

/// ``list.sort(key=_order)``: stable; every key is computed first, so an element that cannot
/// be encoded fails the document even in a short list.
fn sort(items: &mut Vec<Value>) -> Result<(), Invalid> {
    let order = {
        let keys = items.iter().map(|v| Ok(match v {
            Value::Int(_) | Value::Float(_) => OrderKey::Number(v.number().ok_or(Invalid)?),
            Value::Str(s) => OrderKey::Str(s),
            other => OrderKey::Other(encode(other)?),
        })).collect::<Result<Vec<_>, Invalid>>()?;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| keys[a].order(&keys[b]));
        order
    };
    let mut old: Vec<Option<Value>> = std::mem::take(items).into_iter().map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| old[i].take()));
    Ok(())
}

/// Structural equality where numbers (not booleans) may differ by ``tolerance``.
fn close(a: &Value, b: &Value, tolerance: Num<'_>) -> bool {
    if let Some(x) = a.number() {
        return b.number().is_some_and(|y| within(x, y, tolerance));
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.len() == y.len()
            && x.iter().zip(y).all(|((kx, vx), (ky, vy))| kx == ky && close(vx, vy, tolerance)),
        (Value::List(x), Value::List(y)) => x.len() == y.len()
            && x.iter().zip(y).all(|(vx, vy)| close(vx, vy, tolerance)),
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => false,
    }
}

/// Python's ``0 <= t < float("inf")`` for a number.
pub fn is_nonnegative_finite(v: &Value) -> bool {
    match v {
        Value::Int(i) => *i >= Int::Small(0),
        Value::Float(f) => *f >= 0.0 && f.is_finite(),
        _ => false,
    }
}
