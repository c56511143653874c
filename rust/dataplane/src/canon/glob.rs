//! Shell globs as Python's `fnmatch.translate` reads them, matched against a whole name:
//! ``*`` any run, ``?`` one character, ``[seq]`` / ``[!seq]`` one character in / not in the
//! set; a ``[`` without its ``]`` is literal; no quoting and no case folding.

use super::value::decode_at;

/// A compiled glob.
#[derive(Clone, Debug)]
pub struct Glob {
    tokens: Vec<Token>,
    /// ``*`` alone (the default body path), or no wildcard at all: no matcher needed.
    shape: Shape,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    Everything,
    Literal(Vec<u8>),
    Pattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Never,
    Char(u32),
    Set { negated: bool, ranges: Vec<(u32, u32)> },
}

impl Token {
    fn accepts(&self, c: u32) -> bool {
        match self {
            Token::Any => true,
            Token::Char(x) => *x == c,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::Star | Token::Never => false,
        }
    }
}

const STAR: u32 = '*' as u32;
const QUESTION: u32 = '?' as u32;
const OPEN: u32 = '[' as u32;
const CLOSE: u32 = ']' as u32;
const BANG: u32 = '!' as u32;
const DASH: u32 = '-' as u32;

impl Glob {
    pub fn new(pattern: impl IntoIterator<Item = u32>) -> Glob {
        let pat: Vec<u32> = pattern.into_iter().collect();
        let mut tokens = Vec::new();
        let n = pat.len();
        let mut i = 0;
        while i < n {
            let c = pat[i];
            i += 1;
            match c {
                STAR => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                QUESTION => tokens.push(Token::Any),
                OPEN => {
                    let mut j = i;
                    if j < n && pat[j] == BANG {
                        j += 1;
                    }
                    if j < n && pat[j] == CLOSE {
                        j += 1;
                    }
                    while j < n && pat[j] != CLOSE {
                        j += 1;
                    }
                    if j >= n {
                        tokens.push(Token::Char(OPEN));
                    } else {
                        tokens.push(set(&pat, i, j));
                        i = j + 1;
                    }
                }
                _ => tokens.push(Token::Char(c)),
            }
        }
        let shape = if tokens == [Token::Star] {
            Shape::Everything
        } else if tokens.iter().all(|t| matches!(t, Token::Char(_))) {
            let mut literal = Vec::new();
            for t in &tokens {
                if let Token::Char(c) = t {
                    let mut buffer = [0; 4];
                    match char::from_u32(*c) {
                        Some(ch) => literal.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes()),
                        None => literal.extend_from_slice(&wtf8_surrogate(*c)),
                    }
                }
            }
            Shape::Literal(literal)
        } else {
            Shape::Pattern
        };
        Glob { tokens, shape }
    }

    /// Whether the whole of ``name`` (UTF-8, or WTF-8 for JSON keys) matches.
    pub fn matches(&self, name: &[u8]) -> bool {
        match &self.shape {
            Shape::Everything => return true,
            Shape::Literal(l) => return l == name,
            Shape::Pattern => {}
        }
        let (mut t, mut s) = (0, 0);
        let mut resume: Option<(usize, usize)> = None; // after the last star: (token, name)
        loop {
            if let Some(token) = self.tokens.get(t) {
                if *token == Token::Star {
                    t += 1;
                    resume = Some((t, s));
                    continue;
                }
                if s < name.len() {
                    let (c, len) = decode_at(name, s);
                    if token.accepts(c) {
                        t += 1;
                        s += len;
                        continue;
                    }
                }
            } else if s == name.len() {
                return true;
            }
            match resume {
                Some((rt, rs)) if rs < name.len() => {
                    let rs = rs + decode_at(name, rs).1;
                    resume = Some((rt, rs));
                    t = rt;
                    s = rs;
                }
                _ => return false,
            }
        }
    }
}

fn wtf8_surrogate(c: u32) -> [u8; 3] {
    [0xe0 | (c >> 12) as u8, 0x80 | ((c >> 6) & 0x3f) as u8, 0x80 | (c & 0x3f) as u8]
}

/// One item of the class text `fnmatch.translate` writes between the brackets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Atom {
    Char(u32),
    Range,
}

/// The set ``pat[i..j]`` stands for: translate's chunking (hyphens that make ranges, empty
/// ranges dropped), then the regular expression class it writes, read as `re` reads it.
fn set(pat: &[u32], i: usize, j: usize) -> Token {
    let stuff = &pat[i..j];
    let mut atoms: Vec<Atom> = Vec::new();
    if !stuff.contains(&DASH) {
        atoms.extend(stuff.iter().map(|&c| Atom::Char(c)));
    } else {
        let mut chunks: Vec<Vec<u32>> = Vec::new();
        let mut i = i;
        let mut k = if pat[i] == BANG { i + 2 } else { i + 1 };
        while let Some(found) = pat.get(k..j).and_then(|s| s.iter().position(|&c| c == DASH)) {
            let at = k + found;
            chunks.push(pat[i..at].to_vec());
            i = at + 1;
            k = at + 3;
        }
        let chunk = &pat[i..j];
        if chunk.is_empty() {
            if let Some(last) = chunks.last_mut() {
                last.push(DASH);
            }
        } else {
            chunks.push(chunk.to_vec());
        }
        for k in (1..chunks.len()).rev() {
            if let (Some(&a), Some(&b)) = (chunks[k - 1].last(), chunks[k].first()) {
                if a > b {
                    let tail = chunks.remove(k);
                    let head = &mut chunks[k - 1];
                    head.pop();
                    head.extend_from_slice(&tail[1..]);
                }
            }
        }
        for (n, chunk) in chunks.iter().enumerate() {
            if n > 0 {
                atoms.push(Atom::Range);
            }
            atoms.extend(chunk.iter().map(|&c| Atom::Char(c)));
        }
    }
    match atoms.as_slice() {
        [] => return Token::Never,
        [Atom::Char(BANG)] => return Token::Any,
        _ => {}
    }
    let negated = atoms[0] == Atom::Char(BANG);
    let atoms = if negated { &atoms[1..] } else { &atoms[..] };
    // `re`'s class parser: an item, then "-item" makes it a range.
    let mut ranges = Vec::new();
    let mut n = 0;
    while n < atoms.len() {
        let lo = match atoms[n] {
            Atom::Char(c) => c,
            Atom::Range => DASH,
        };
        match (atoms.get(n + 1), atoms.get(n + 2)) {
            (Some(Atom::Range), Some(&hi)) => {
                let hi = match hi {
                    Atom::Char(c) => c,
                    Atom::Range => DASH,
                };
                ranges.push((lo, hi));
                n += 3;
            }
            (Some(Atom::Range), None) => {
                ranges.push((lo, lo));
                ranges.push((DASH, DASH));
                n += 2;
            }
            _ => {
                ranges.push((lo, lo));
                n += 1;
            }
        }
    }
    Token::Set { negated, ranges }
}
