//! The text rule: regex matches (timestamps, nonces) replaced by a fixed token, as Python's
//! ``pattern.sub`` does over text decoded with ``surrogateescape``.

use std::borrow::Cow;

use regex::Regex;

use super::MASK_TOKEN;

/// Where a byte that is not UTF-8 goes while the patterns run: one private-use character per
/// byte, which, like the lone surrogate Python decodes it to, only ``.`` and negated classes
/// match. The bytes themselves are copied back, never these characters.
const ESCAPE_BASE: u32 = 0x10_fe00;

#[derive(Debug)]
pub struct TextRule {
    patterns: Vec<Regex>,
}

impl TextRule {
    pub fn new(patterns: Vec<Regex>) -> TextRule {
        TextRule { patterns }
    }

    pub fn canonicalise(&self, raw: &[u8]) -> Vec<u8> {
        let mut text: Cow<'_, [u8]> = Cow::Borrowed(raw);
        for pattern in &self.patterns {
            if let Some(masked) = substitute(pattern, &text) {
                text = Cow::Owned(masked);
            }
        }
        text.into_owned()
    }
}

/// The text a pattern runs over, and where it came from in the raw bytes.
struct Decoded<'a> {
    text: Cow<'a, str>,
    /// Offsets in ``text`` of the characters that stand for undecodable bytes (4 bytes each).
    escapes: Vec<usize>,
}

impl Decoded<'_> {
    fn new(raw: &[u8]) -> Decoded<'_> {
        if let Ok(text) = std::str::from_utf8(raw) {
            return Decoded { text: Cow::Borrowed(text), escapes: Vec::new() };
        }
        let mut text = String::with_capacity(raw.len() + 16);
        let mut escapes = Vec::new();
        for chunk in raw.utf8_chunks() {
            text.push_str(chunk.valid());
            for &b in chunk.invalid() {
                escapes.push(text.len());
                text.push(char::from_u32(ESCAPE_BASE + b as u32).unwrap_or('\u{fffd}'));
            }
        }
        Decoded { text: Cow::Owned(text), escapes }
    }

    fn raw_offset(&self, at: usize) -> usize {
        at - 3 * self.escapes.partition_point(|&e| e < at)
    }
}

/// ``pattern.sub(MASK_TOKEN, text)`` on the raw bytes; None when nothing matched.
fn substitute(pattern: &Regex, raw: &[u8]) -> Option<Vec<u8>> {
    let decoded = Decoded::new(raw);
    let text: &str = &decoded.text;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // raw offset copied so far
    let mut at = 0;
    let mut after_empty = false;
    while at <= text.len() {
        let Some(mut m) = pattern.find_at(text, at) else { break };
        if after_empty && m.is_empty() && m.start() == at {
            // Python refuses an empty match where the last empty one was; it searches on from
            // the next character.
            let Some(c) = text[at..].chars().next() else { break };
            match pattern.find_at(text, at + c.len_utf8()) {
                Some(next) => m = next,
                None => break,
            }
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(raw.len()));
        let start = decoded.raw_offset(m.start());
        out.extend_from_slice(&raw[copied..start]);
        out.extend_from_slice(MASK_TOKEN.as_bytes());
        copied = decoded.raw_offset(m.end());
        after_empty = m.is_empty();
        at = m.end();
    }
    let mut out = out?;
    out.extend_from_slice(&raw[copied..]);
    Some(out)
}
