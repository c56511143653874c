//! DNS replies as [`crate::dns`] writes them: one line per record,
//! ``SECTION owner ttl class type rdata`` separated by tabs. The key is the lines with the TTL
//! column masked; TTLs are then compared in line order within a tolerance, or not at all.

use super::Canonical;

/// What the TTL column becomes in the key.
const MASKED_TTL: &[u8] = b"-";

#[derive(Debug)]
pub struct DnsRule {
    /// Seconds TTLs may differ by; None: TTLs are not compared.
    pub tolerance: Option<u32>,
}

impl DnsRule {
    pub fn canonicalise(&self, raw: &[u8]) -> Canonical {
        if raw.is_empty() {
            return Canonical::bytes(Vec::new());
        }
        let mut key = Vec::with_capacity(raw.len());
        let mut ttls = Vec::new();
        for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                key.push(b'\n');
            }
            let fields: Vec<&[u8]> = line.splitn(6, |&b| b == b'\t').collect();
            let ttl = (fields.len() == 6).then(|| ttl(fields[2])).flatten();
            match ttl {
                Some(ttl) => {
                    ttls.push(ttl);
                    for (n, field) in fields.iter().enumerate() {
                        if n > 0 {
                            key.push(b'\t');
                        }
                        key.extend_from_slice(if n == 2 { MASKED_TTL } else { field });
                    }
                }
                None => key.extend_from_slice(line),
            }
        }
        Canonical { key, value: None, ttls }
    }

    pub fn equivalent(&self, a: &Canonical, b: &Canonical) -> bool {
        if a.key != b.key {
            return false;
        }
        let Some(tolerance) = self.tolerance else { return true };
        a.ttls.len() == b.ttls.len()
            && a.ttls.iter().zip(&b.ttls).all(|(x, y)| x.abs_diff(*y) <= tolerance)
    }
}

/// A TTL column: decimal digits only.
fn ttl(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"answer\twww.example.test.\t3600\tIN\tA\t\\# 4 c000020a\n\
                       answer\twww.example.test.\t3600\tIN\tA\t\\# 4 c000020b";

    fn swap_ttl(raw: &[u8], ttl: &str) -> Vec<u8> {
        String::from_utf8_lossy(raw).replace("3600", ttl).into_bytes()
    }

    #[test]
    fn ttls_are_masked_in_the_key_and_compared_by_tolerance() {
        let rule = DnsRule { tolerance: Some(5) };
        let a = rule.canonicalise(A);
        assert_eq!(a.ttls, vec![3600, 3600]);
        assert!(!a.key.windows(4).any(|w| w == b"3600"));
        let near = rule.canonicalise(&swap_ttl(A, "3595"));
        let far = rule.canonicalise(&swap_ttl(A, "3594"));
        assert_eq!(a.key, far.key);
        assert!(rule.equivalent(&a, &near) && !rule.equivalent(&a, &far));
        let masked = DnsRule { tolerance: None };
        assert!(masked.equivalent(&masked.canonicalise(A), &masked.canonicalise(&swap_ttl(A, "1"))));
    }

    #[test]
    fn an_empty_reply_and_other_records_never_agree() {
        let rule = DnsRule { tolerance: None };
        let empty = rule.canonicalise(b"");
        assert!(empty.key.is_empty() && empty.ttls.is_empty());
        assert!(!rule.equivalent(&empty, &rule.canonicalise(A)));
    }
}
