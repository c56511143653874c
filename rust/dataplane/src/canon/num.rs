//! Numbers as Python holds them after parsing JSON: integers exact at any size, IEEE floats,
//! compared and subtracted with Python's rules (int against float exactly, int minus float in
//! floats), and floats spelled as orjson and as `repr` spell them.

use std::cmp::Ordering;
use std::io::Write;

/// Limbs of a magnitude are base 10^9, least significant first.
const BASE: u64 = 1_000_000_000;

/// An integer as Python holds it. `Big` only outside i128, so equal values are equal variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Int {
    Small(i128),
    Big(Box<Big>),
}

/// Sign and magnitude of an integer beyond i128.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Big {
    neg: bool,
    limbs: Vec<u32>,
}

/// A borrowed number, for comparisons between ints and floats.
#[derive(Clone, Copy, Debug)]
pub enum Num<'a> {
    Int(&'a Int),
    Float(f64),
}

impl Int {
    /// ``text`` follows the JSON grammar: an optional ``-``, then digits without leading zeros.
    pub fn parse(text: &str) -> Int {
        if let Ok(v) = text.parse::<i128>() {
            return Int::Small(v);
        }
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        let mut limbs = Vec::with_capacity(digits.len() / 9 + 1);
        let mut end = digits.len();
        while end > 0 {
            let start = end.saturating_sub(9);
            limbs.push(digits[start..end].parse().unwrap_or(0));
            end = start;
        }
        Int::from_mag(neg, limbs)
    }

    fn from_mag(neg: bool, mut limbs: Vec<u32>) -> Int {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        let small = limbs.iter().rev().try_fold(0u128, |acc, &l| {
            acc.checked_mul(BASE as u128)?.checked_add(l as u128)
        });
        match small {
            Some(m) if !neg && m <= i128::MAX as u128 => return Int::Small(m as i128),
            Some(m) if neg && m <= i128::MAX as u128 + 1 => {
                return Int::Small((m as i128).wrapping_neg())
            }
            _ => {}
        }
        Int::Big(Box::new(Big { neg, limbs }))
    }

    fn sign_mag(&self) -> (bool, Vec<u32>) {
        match self {
            Int::Small(v) => {
                let mut m = v.unsigned_abs();
                let mut limbs = Vec::new();
                while m > 0 {
                    limbs.push((m % BASE as u128) as u32);
                    m /= BASE as u128;
                }
                (*v < 0, limbs)
            }
            Int::Big(b) => (b.neg, b.limbs.clone()),
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Int::Small(0))
    }

    /// orjson encodes i64 and u64; beyond that Python falls back to `json.dumps`.
    pub fn fits_orjson(&self) -> bool {
        matches!(self, Int::Small(v) if (i64::MIN as i128..=u64::MAX as i128).contains(v))
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            // Formatted in place (writing to a Vec cannot fail): one of these per number.
            Int::Small(v) => {
                let _ = write!(out, "{v}");
            }
            Int::Big(b) => {
                if b.neg {
                    out.push(b'-');
                }
                let mut limbs = b.limbs.iter().rev();
                if let Some(top) = limbs.next() {
                    let _ = write!(out, "{top}");
                }
                for l in limbs {
                    let _ = write!(out, "{l:09}");
                }
            }
        }
    }

    /// Python's ``float(i)``: correctly rounded; None where Python raises OverflowError.
    pub fn to_f64(&self) -> Option<f64> {
        let f = match self {
            Int::Small(v) => *v as f64,
            Int::Big(_) => {
                let mut text = Vec::new();
                self.write(&mut text);
                std::str::from_utf8(&text).ok()?.parse().ok()?
            }
        };
        f.is_finite().then_some(f)
    }

    /// ``self - other``, exactly.
    pub fn sub(&self, other: &Int) -> Int {
        if let (Int::Small(a), Int::Small(b)) = (self, other) {
            if let Some(d) = a.checked_sub(*b) {
                return Int::Small(d);
            }
        }
        let (an, am) = self.sign_mag();
        let (bn, bm) = other.sign_mag();
        let bn = !bn;
        if an == bn {
            return Int::from_mag(an, add_mag(&am, &bm));
        }
        match cmp_mag(&am, &bm) {
            Ordering::Less => Int::from_mag(bn, sub_mag(&bm, &am)),
            _ => Int::from_mag(an, sub_mag(&am, &bm)),
        }
    }

    pub fn abs(self) -> Int {
        match self {
            Int::Small(v) if v != i128::MIN => Int::Small(v.abs()),
            other => {
                let (_, m) = other.sign_mag();
                Int::from_mag(false, m)
            }
        }
    }

    /// The integer value of an integral float, exactly.
    fn from_integral(f: f64) -> Int {
        if (-(2f64.powi(127))..2f64.powi(127)).contains(&f) {
            return Int::Small(f as i128);
        }
        let bits = f.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
        let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
        let mut limbs = Int::Small(mantissa as i128).sign_mag().1;
        let mut left = exp;
        while left > 0 {
            let step = left.min(29);
            mul_small(&mut limbs, 1 << step);
            left -= step;
        }
        Int::from_mag(f < 0.0, limbs)
    }
}

impl Ord for Int {
    fn cmp(&self, other: &Int) -> Ordering {
        match (self, other) {
            (Int::Small(a), Int::Small(b)) => a.cmp(b),
            (Int::Small(_), Int::Big(b)) => if b.neg { Ordering::Greater } else { Ordering::Less },
            (Int::Big(a), Int::Small(_)) => if a.neg { Ordering::Less } else { Ordering::Greater },
            (Int::Big(a), Int::Big(b)) => match (a.neg, b.neg) {
                (false, true) => Ordering::Greater,
                (true, false) => Ordering::Less,
                (false, false) => cmp_mag(&a.limbs, &b.limbs),
                (true, true) => cmp_mag(&b.limbs, &a.limbs),
            },
        }
    }
}

impl PartialOrd for Int {
    fn partial_cmp(&self, other: &Int) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn cmp_mag(a: &[u32], b: &[u32]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

fn add_mag(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0u64;
    for i in 0..a.len().max(b.len()) {
        let s = *a.get(i).unwrap_or(&0) as u64 + *b.get(i).unwrap_or(&0) as u64 + carry;
        out.push((s % BASE) as u32);
        carry = s / BASE;
    }
    if carry > 0 {
        out.push(carry as u32);
    }
    out
}

/// ``a - b`` for ``a >= b``.
fn sub_mag(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0i64;
    for (i, &x) in a.iter().enumerate() {
        let mut d = x as i64 - *b.get(i).unwrap_or(&0) as i64 - borrow;
        borrow = (d < 0) as i64;
        if d < 0 {
            d += BASE as i64;
        }
        out.push(d as u32);
    }
    out
}

fn mul_small(limbs: &mut Vec<u32>, m: u32) {
    let mut carry = 0u64;
    for l in limbs.iter_mut() {
        let p = *l as u64 * m as u64 + carry;
        *l = (p % BASE) as u32;
        carry = p / BASE;
    }
    while carry > 0 {
        limbs.push((carry % BASE) as u32);
        carry /= BASE;
    }
}

/// Python's ordering between numbers: exact across ints and floats; None if a NaN takes part.
pub fn compare(a: Num<'_>, b: Num<'_>) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => compare_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => compare_int_float(y, x).map(Ordering::reverse),
    }
}

fn compare_int_float(i: &Int, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() {
        return Some(if f > 0.0 { Ordering::Less } else { Ordering::Greater });
    }
    let floor = f.floor();
    Some(i.cmp(&Int::from_integral(floor)).then(if f > floor {
        Ordering::Less
    } else {
        Ordering::Equal
    }))
}

/// Python's ``abs(a - b) <= tolerance``; false where Python raises OverflowError (an integer
/// beyond float range against a float).
pub fn within(a: Num<'_>, b: Num<'_>, tolerance: Num<'_>) -> bool {
    let diff = match (a, b) {
        (Num::Int(x), Num::Int(y)) => {
            let d = x.sub(y).abs();
            return matches!(compare(Num::Int(&d), tolerance),
                            Some(Ordering::Less | Ordering::Equal));
        }
        (Num::Float(x), Num::Float(y)) => x - y,
        (Num::Int(x), Num::Float(y)) => match x.to_f64() {
            Some(x) => x - y,
            None => return false,
        },
        (Num::Float(x), Num::Int(y)) => match y.to_f64() {
            Some(y) => x - y,
            None => return false,
        },
    };
    matches!(compare(Num::Float(diff.abs()), tolerance), Some(Ordering::Less | Ordering::Equal))
}

/// A finite non-zero float's shortest round-trip digits: value = 0.DIGITS x 10^point.
struct Decimal {
    digits: [u8; 24],
    len: usize,
    point: i32,
}

impl Decimal {
    fn of(f: f64) -> Decimal {
        let mut buffer = ryu::Buffer::new();
        let text = buffer.format_finite(f.abs());
        let (mantissa, exp) = match text.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
            None => (text, 0),
        };
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut d = Decimal { digits: [0; 24], len: 0, point: whole.len() as i32 + exp };
        for &c in whole.as_bytes().iter().chain(frac.as_bytes()) {
            if d.len == 0 && c == b'0' {
                d.point -= 1;
            } else {
                d.digits[d.len] = c;
                d.len += 1;
            }
        }
        while d.len > 0 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        d
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    /// ``d.ddd`` then ``e`` and the exponent as ``exp`` writes it.
    fn write_scientific(&self, out: &mut Vec<u8>, exp: impl FnOnce(i32) -> String) {
        let d = self.digits();
        out.push(d[0]);
        if d.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        out.push(b'e');
        out.extend_from_slice(exp(self.point - 1).as_bytes());
    }

    fn write_fixed(&self, out: &mut Vec<u8>) {
        let d = self.digits();
        let point = self.point;
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-point) as usize, b'0');
            out.extend_from_slice(d);
        } else if point as usize >= d.len() {
            out.extend_from_slice(d);
            out.resize(out.len() + point as usize - d.len(), b'0');
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&d[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&d[point as usize..]);
        }
    }
}

/// How orjson writes a float: ryu's layout with an explicit ``+`` in positive exponents;
/// non-finite floats become ``null``.
pub fn write_orjson_float(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if f == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let d = Decimal::of(f);
    if -5 < d.point && d.point <= 16 {
        d.write_fixed(out);
    } else {
        d.write_scientific(out, |e| if e > 0 { format!("+{e}") } else { e.to_string() });
    }
}

/// Python's ``repr(f)``; ``json`` spells the non-finite ones as `json.dumps` does.
pub fn write_python_float(out: &mut Vec<u8>, f: f64, json: bool) {
    if f.is_nan() {
        out.extend_from_slice(if json { b"NaN" } else { b"nan" });
        return;
    }
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if f.is_infinite() {
        out.extend_from_slice(if json { b"Infinity" } else { b"inf" });
    } else if f == 0.0 {
        out.extend_from_slice(b"0.0");
    } else {
        let d = Decimal::of(f);
        if d.point <= -4 || d.point > 16 {
            d.write_scientific(out, |e| format!("{}{:02}", if e < 0 { '-' } else { '+' },
                                                e.unsigned_abs()));
        } else {
            d.write_fixed(out);
        }
    }
}
