//! The face the boundary shows: whichever executor's reply is sent, a client must not tell
//! which one it was.
//!
//! Headers that name a product (`Server`, `X-Powered-By`, `Via`, and what the configuration
//! adds) are removed or replaced by configured values, and headers go out in one order
//! (sorted by name; repeated names keep theirs), since each server orders its own.

use bytes::Bytes;
use serde::Deserialize;

use super::syntax::{is_field_value, is_token};
use super::Headers;

/// The `face` section of a snapshot, as the control plane sends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    /// Header names removed from every reply.
    pub remove: Vec<String>,
    /// Headers set on every reply (replacing an executor's own).
    pub set: Vec<(String, String)>,
}

/// The compiled `face` section: lower-case names, checked values.
#[derive(Clone, Debug, Default)]
pub struct Face {
    remove: Vec<Bytes>,
    set: Vec<(Bytes, Bytes)>,
}

impl Face {
    /// Compile ``spec``; an error names the field.
    pub fn compile(spec: &Spec) -> Result<Face, String> {
        let name = |n: &str, what: &str| {
            let lower = n.to_ascii_lowercase();
            if is_token(lower.as_bytes()) {
                Ok(Bytes::from(lower))
            } else {
                Err(format!("face.{what}: {n:?} is not a header name"))
            }
        };
        let remove = spec.remove.iter().map(|n| name(n, "remove")).collect::<Result<_, _>>()?;
        let mut set = Vec::with_capacity(spec.set.len());
        for (n, v) in &spec.set {
            if !is_field_value(v.as_bytes()) {
                return Err(format!("face.set: the value for {n} is not a header value"));
            }
            set.push((name(n, "set")?, Bytes::copy_from_slice(v.as_bytes())));
        }
        Ok(Face { remove, set })
    }

    /// ``headers`` as the client sees them (names in lower case).
    pub fn apply(&self, headers: &Headers) -> Headers {
        let mut out: Headers = headers.iter()
            .map(|(n, v)| match n.iter().any(u8::is_ascii_uppercase) {
                true => (Bytes::from(n.to_ascii_lowercase()), v.clone()),
                false => (n.clone(), v.clone()),
            })
            .filter(|(n, _)| !self.remove.contains(n) && !self.set.iter().any(|(s, _)| s == n))
            .chain(self.set.iter().cloned()).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));  // stable: a repeated name keeps its order
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn identifying_headers_go_and_the_order_is_one() {
        let face = Face::compile(&Spec { remove: vec!["Server".into(), "x-powered-by".into()],
                                         set: vec![("Via".into(), "gateway".into())] }).unwrap();
        let nginx = h(&[("server", "nginx"), ("content-type", "text/html"), ("set-cookie", "a"),
                        ("date", "d"), ("set-cookie", "b"), ("via", "1.1 nginx")]);
        let node = h(&[("x-powered-by", "Express"), ("date", "d"), ("set-cookie", "a"),
                       ("content-type", "text/html"), ("set-cookie", "b")]);
        let want = h(&[("content-type", "text/html"), ("date", "d"), ("set-cookie", "a"),
                       ("set-cookie", "b"), ("via", "gateway")]);
        assert_eq!(face.apply(&nginx), want);
        assert_eq!(face.apply(&node), want);
    }

    #[test]
    fn a_bad_face_names_the_field() {
        let bad = Spec { remove: vec!["a b".into()], set: vec![] };
        assert!(Face::compile(&bad).unwrap_err().contains("face.remove"));
        let bad = Spec { remove: vec![], set: vec![("server".into(), "x\r\ny".into())] };
        assert!(Face::compile(&bad).unwrap_err().contains("face.set"));
    }
}
