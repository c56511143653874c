//! The face the boundary shows: whichever executor's reply is sent, a client must not tell
//! which one it was.
//!
//! Headers that name a product (`Server`, `X-Powered-By`, `Via`, and what the configuration
//! adds) are removed or replaced by configured values, and headers go out in one order
//! (sorted by name; repeated names keep theirs), since each server orders its own. With
//! `drop_unvoted`, a header the vote did not look at (exempt for the reply's status, or outside
//! an `allow` list) is not passed on either: the canonicalisation rules exempt exactly the
//! headers that differ between stacks (an ETag's format, an advertisement one server sends),
//! so each would tell which executor answered. `Date` and `Content-Length` stay (framing).
//! With `json`, a body under a JSON rule goes out in the one spelling the canonicaliser gives
//! JSON (keys sorted, no spaces), as `application/json`: each stack formats JSON, and names
//! its media type, its own way (the answer to a HEAD goes without a Content-Length).

use bytes::Bytes;
use serde::Deserialize;

use super::syntax::{is_field_value, is_token};
use super::{Headers, Response};
use crate::canon::BodyRule;

/// The `face` section of a snapshot, as the control plane sends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    /// Header names removed from every reply.
    pub remove: Vec<String>,
    /// Headers set on every reply (replacing an executor's own).
    pub set: Vec<(String, String)>,
    /// Drop the headers the vote did not look at.
    pub drop_unvoted: bool,
    /// Send JSON bodies re-encoded.
    pub json: bool,
}

/// Kept even when not voted on: the gateway frames the reply with them.
const FRAMING: [&[u8]; 2] = [b"content-length", b"date"];

/// The compiled `face` section: lower-case names, checked values.
#[derive(Clone, Debug, Default)]
pub struct Face {
    remove: Vec<Bytes>,
    set: Vec<(Bytes, Bytes)>,
    drop_unvoted: bool,
    json: bool,
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
        Ok(Face { remove, set, drop_unvoted: spec.drop_unvoted, json: spec.json })
    }

    /// ``headers`` as the client sees them (names in lower case); ``voted`` says whether the
    /// vote looked at a (lower-case) header name.
    pub fn apply(&self, headers: &Headers, voted: &dyn Fn(&[u8]) -> bool) -> Headers {
        let mut out: Headers = headers.iter()
            .map(|(n, v)| match n.iter().any(u8::is_ascii_uppercase) {
                true => (Bytes::from(n.to_ascii_lowercase()), v.clone()),
                false => (n.clone(), v.clone()),
            })
            .filter(|(n, _)| !self.remove.contains(n) && !self.set.iter().any(|(s, _)| s == n))
            .filter(|(n, _)| !self.drop_unvoted || FRAMING.contains(&&n[..]) || voted(n))
            .chain(self.set.iter().cloned()).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));  // stable: a repeated name keeps its order
        out
    }

    /// ``response`` (as `apply` left it) with its body re-encoded by ``rule``, where the face
    /// does that and the rule is a JSON one that reads the body. The answer to a HEAD
    /// (``head_only``: no body to re-encode) loses its Content-Length instead, which gives the
    /// length of the executor's own spelling.
    pub fn body(&self, response: &mut Response, rule: &BodyRule, head_only: bool) {
        if !self.json || !rule.is_json() {
            return;
        }
        if head_only {
            response.headers.retain(|(name, _)| name.as_ref() != b"content-length");
        } else if let Some(body) = rule.reencode(&response.body) {
            response.body = Bytes::from(body);
        } else {
            return;
        }
        for (name, value) in &mut response.headers {
            if name.as_ref() == b"content-type" {
                *value = Bytes::from_static(b"application/json");
            }
        }
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
                                         set: vec![("Via".into(), "gateway".into())],
                                         drop_unvoted: false, json: false }).unwrap();
        let nginx = h(&[("server", "nginx"), ("content-type", "text/html"), ("set-cookie", "a"),
                        ("date", "d"), ("set-cookie", "b"), ("via", "1.1 nginx")]);
        let node = h(&[("x-powered-by", "Express"), ("date", "d"), ("set-cookie", "a"),
                       ("content-type", "text/html"), ("set-cookie", "b")]);
        let want = h(&[("content-type", "text/html"), ("date", "d"), ("set-cookie", "a"),
                       ("set-cookie", "b"), ("via", "gateway")]);
        assert_eq!(face.apply(&nginx, &|_| true), want);
        assert_eq!(face.apply(&node, &|_| true), want);
    }

    #[test]
    fn what_the_vote_did_not_look_at_is_not_shown() {
        let face = Face::compile(&Spec { drop_unvoted: true, ..Spec::default() }).unwrap();
        let voted = |n: &[u8]| n == b"content-type";
        let apache = h(&[("ETag", "\"2c-5f\""), ("content-type", "text/html"),
                         ("accept-ranges", "bytes"), ("date", "d"), ("content-length", "44")]);
        let nginx = h(&[("content-type", "text/html"), ("etag", "\"65a-2c\""), ("date", "d"),
                        ("content-length", "44")]);
        let want = h(&[("content-length", "44"), ("content-type", "text/html"), ("date", "d")]);
        assert_eq!(face.apply(&apache, &voted), want);
        assert_eq!(face.apply(&nginx, &voted), want);
        let keep = Face::compile(&Spec::default()).unwrap();
        assert_eq!(keep.apply(&nginx, &voted).len(), 4);
    }

    #[test]
    fn json_goes_out_in_one_spelling_whoever_wrote_it() {
        let rules = crate::canon::RuleSet::compile_json(
            r#"{"bodies": [{"content_type": "application/json", "json": {}}]}"#).unwrap();
        let reply = |body: &str, content_type: &str| Response {
            status: 200, reason: Bytes::new(), headers: h(&[("content-type", content_type)]),
            body: Bytes::from(body.to_owned()), keep_alive: true };
        let face = Face::compile(&Spec { json: true, ..Spec::default() }).unwrap();
        let shown = |mut r: Response| {
            let content_type = r.header(b"content-type").cloned().unwrap_or_default();
            face.body(&mut r, rules.body_rule("/", &content_type, 200), false);
            r
        };
        let stdlib = shown(reply(r#"{"id": 1, "text": "aé"}"#, "application/json"));
        let node = shown(reply(r#"{"text":"aé","id":1}"#, "application/json; charset=utf-8"));
        assert_eq!(stdlib, node);
        assert_eq!(stdlib.body, Bytes::from(r#"{"id":1,"text":"aé"}"#));
        assert_eq!(stdlib.header(b"content-type").unwrap(), "application/json");
        // not JSON after all: passed on as written
        let broken = shown(reply("{oops", "application/json"));
        assert_eq!((broken.body.as_ref(), broken.header(b"content-type").unwrap().as_ref()),
                   (&b"{oops"[..], &b"application/json"[..]));
        // a HEAD: no body, and no length that would tell whose spelling it measured
        let mut head = reply("", "application/json; charset=utf-8");
        head.headers.push((Bytes::from_static(b"content-length"), Bytes::from_static(b"21")));
        face.body(&mut head, rules.body_rule("/", b"application/json", 200), true);
        assert_eq!(head.headers, h(&[("content-type", "application/json")]));
        let keep = Face::default();
        let mut r = reply(r#"{"id": 1}"#, "application/json");
        keep.body(&mut r, rules.body_rule("/", b"application/json", 200), false);
        assert_eq!(r.body, Bytes::from(r#"{"id": 1}"#));
    }

    #[test]
    fn a_bad_face_names_the_field() {
        let bad = Spec { remove: vec!["a b".into()], ..Spec::default() };
        assert!(Face::compile(&bad).unwrap_err().contains("face.remove"));
        let bad = Spec { set: vec![("server".into(), "x\r\ny".into())], ..Spec::default() };
        assert!(Face::compile(&bad).unwrap_err().contains("face.set"));
    }
}
