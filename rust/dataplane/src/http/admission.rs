//! What the input agent serves of a request it has read whole, before any executor sees it.
//!
//! Heterogeneous servers legitimately disagree on requests the boundary has no need to pass:
//! a method the service does not offer (one answers 405, another 404, a third 501), or a path
//! that is not in normal form (`//notes`, `/%6eotes`, `/a/../b`: some read them as the path
//! they stand for, others do not). Each such disagreement is a dissent any client can cause
//! at will. Methods not served are refused here with 405 and the `Allow` list; a path not in
//! normal form is forwarded as sent, normalised, or refused, as configured.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use super::request::KNOWN_METHODS;
use super::{Refusal, Request};

/// What becomes of a request whose path is not in normal form.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// Sent to the executors as the client wrote it.
    #[default]
    Forward,
    /// Sent in normal form.
    Normalise,
    /// Refused with 404.
    Refuse,
}

/// The `http` section of a snapshot, as the control plane sends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    /// The methods served; None: every method the reader admits.
    pub methods: Option<Vec<String>>,
    pub targets: Targets,
}

/// The compiled `http` section.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// None: every method the reader admits.
    methods: Option<Vec<Bytes>>,
    /// The methods served, as a 405's `Allow` lists them.
    allow: Bytes,
    targets: Targets,
}

fn refuse(status: u16, reason: &str) -> Refusal {
    Refusal { status, reason: reason.to_owned(), allow: None }
}

impl Admission {
    /// Compile ``spec``; an error names the field.
    pub fn compile(spec: &Spec) -> Result<Admission, String> {
        let methods = match &spec.methods {
            None => None,
            Some(names) if names.is_empty() => {
                return Err("http.methods: an empty list refuses every request".into());
            }
            Some(names) => {
                let mut methods: Vec<Bytes> = Vec::with_capacity(names.len());
                for name in names {
                    if !KNOWN_METHODS.contains(&name.as_bytes()) {
                        return Err(format!("http.methods: {name:?} is not a method the input \
                                            agent admits"));
                    }
                    if methods.iter().any(|m| m == name.as_bytes()) {
                        return Err(format!("http.methods: {name} is listed twice"));
                    }
                    methods.push(Bytes::copy_from_slice(name.as_bytes()));
                }
                Some(methods)
            }
        };
        let allow = methods.as_ref().map(|m| Bytes::from(m.join(&b", "[..]))).unwrap_or_default();
        Ok(Admission { methods, allow, targets: spec.targets })
    }

    /// Let ``request`` through (its target in normal form if so configured), or refuse it.
    pub fn admit(&self, request: &mut Request) -> Result<(), Refusal> {
        if let Some(methods) = &self.methods {
            if !methods.contains(&request.method) {
                return Err(Refusal { allow: Some(self.allow.clone()),
                                     ..refuse(405, "method not allowed") });
            }
        }
        if self.targets == Targets::Forward || request.target.as_ref() == b"*" {
            return Ok(());
        }
        let target = request.target.clone();
        let split = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
        let (path, query) = target.split_at(split);
        let normal = normal_path(path)?;
        if normal == path {
            return Ok(());
        }
        if self.targets == Targets::Refuse {
            return Err(refuse(404, "request path not in normal form"));
        }
        request.target = Bytes::from([normal.as_ref(), query].concat());
        Ok(())
    }
}

/// RFC 3986 2.3.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// An origin-form ``path`` in normal form: percent-encoded unreserved characters decoded and
/// other escapes in upper case (RFC 3986 6.2.2), dot segments removed (5.2.4), runs of ``/``
/// merged. Refused: a malformed escape (400), an escaped ``/`` or NUL, which servers read
/// differently and no normalisation can settle (404).
pub(crate) fn normal_path(path: &[u8]) -> Result<Cow<'_, [u8]>, Refusal> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            decoded.push(path[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (path.get(i + 1).copied().and_then(hex),
                                    path.get(i + 2).copied().and_then(hex)) else {
            return Err(refuse(400, "invalid percent-encoding in the request path"));
        };
        match hi << 4 | lo {
            b'/' | 0 => return Err(refuse(404, "an encoded / or NUL in the request path")),
            b if unreserved(b) => decoded.push(b),
            b => decoded.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
        i += 3;
    }
    let segments: Vec<&[u8]> = decoded.strip_prefix(b"/").unwrap_or(&decoded)
        .split(|&b| b == b'/').collect();
    let mut kept: Vec<&[u8]> = Vec::with_capacity(segments.len());
    let mut trailing = false;
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match *segment {
            b"" | b"." => trailing = last,
            b".." => {
                kept.pop();
                trailing = last;
            }
            _ => kept.push(segment),
        }
    }
    let mut normal = Vec::with_capacity(decoded.len());
    for segment in &kept {
        normal.push(b'/');
        normal.extend_from_slice(segment);
    }
    if trailing || kept.is_empty() {
        normal.push(b'/');
    }
    Ok(if normal == path { Cow::Borrowed(path) } else { Cow::Owned(normal) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Version;

    fn request(method: &str, target: &str) -> Request {
        Request { method: Bytes::copy_from_slice(method.as_bytes()),
                  target: Bytes::copy_from_slice(target.as_bytes()), headers: Vec::new(),
                  body: Bytes::new(), keep_alive: true, version: Version::Http11 }
    }

    fn admission(methods: Option<&[&str]>, targets: Targets) -> Admission {
        let methods = methods.map(|m| m.iter().map(|s| (*s).to_owned()).collect());
        Admission::compile(&Spec { methods, targets }).expect("a valid http section")
    }

    fn normal(path: &str) -> Result<String, u16> {
        normal_path(path.as_bytes()).map(|p| String::from_utf8_lossy(&p).into_owned())
            .map_err(|r| r.status)
    }

    #[test]
    fn paths_are_put_in_normal_form() {
        for (path, expected) in [
            ("/", "/"), ("/notes", "/notes"), ("/notes/", "/notes/"), ("//notes", "/notes"),
            ("/notes//1", "/notes/1"), ("///", "/"), ("/%6eotes", "/notes"),
            ("/notes/%31", "/notes/1"), ("/a%2db%5F%7e", "/a-b_~"),
            ("/%c3%a9", "/%C3%A9"), ("/a%20b", "/a%20b"), ("/./notes", "/notes"),
            ("/a/../notes", "/notes"), ("/../index.html", "/index.html"), ("/a/b/..", "/a/"),
            ("/a/.", "/a/"), ("/%2e%2e/x", "/x"), ("/a/%2E/b", "/a/b"), ("/..", "/"),
            ("/a/...", "/a/..."), ("/a.b/c", "/a.b/c"),
        ] {
            assert_eq!(normal(path).as_deref(), Ok(expected), "{path}");
        }
        for malformed in ["/%", "/%zz", "/a%2", "/%g0"] {
            assert_eq!(normal(malformed), Err(400), "{malformed}");
        }
        assert_eq!(normal("/a%2fb"), Err(404));
        assert_eq!(normal("/a%00b"), Err(404));
        assert!(matches!(normal_path(b"/notes/1"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn methods_not_served_get_405_with_the_allow_list() {
        let only = admission(Some(&["GET", "HEAD", "POST"]), Targets::Forward);
        for method in ["GET", "HEAD", "POST"] {
            assert!(only.admit(&mut request(method, "/notes")).is_ok(), "{method}");
        }
        for method in ["OPTIONS", "PROPFIND", "DELETE"] {
            let refusal = only.admit(&mut request(method, "/notes")).expect_err(method);
            assert_eq!(refusal.status, 405);
            assert_eq!(refusal.allow.as_deref(), Some(&b"GET, HEAD, POST"[..]));
        }
        let every = Admission::default();
        assert!(every.admit(&mut request("PROPFIND", "//notes")).is_ok());
    }

    #[test]
    fn targets_are_forwarded_normalised_or_refused() {
        let mut r = request("GET", "//notes/./%31?a=%2F&b=//x");
        admission(None, Targets::Forward).admit(&mut r).unwrap();
        assert_eq!(r.target, "//notes/./%31?a=%2F&b=//x");
        admission(None, Targets::Normalise).admit(&mut r).unwrap();
        assert_eq!(r.target, "/notes/1?a=%2F&b=//x", "the query is left as sent");
        let refusal = admission(None, Targets::Refuse)
            .admit(&mut request("GET", "//notes")).expect_err("not in normal form");
        assert_eq!(refusal.status, 404);
        assert!(admission(None, Targets::Refuse).admit(&mut request("GET", "/notes?x")).is_ok());
        assert!(admission(None, Targets::Refuse).admit(&mut request("OPTIONS", "*")).is_ok());
        let bad = admission(None, Targets::Normalise).admit(&mut request("GET", "/%zz"));
        assert_eq!(bad.expect_err("malformed").status, 400);
    }

    #[test]
    fn a_bad_http_section_names_the_field() {
        for (methods, message) in [
            (vec![], "http.methods: an empty list refuses every request"),
            (vec!["GET", "BREW"], "http.methods: \"BREW\" is not a method the input agent admits"),
            (vec!["get"], "http.methods: \"get\" is not a method the input agent admits"),
            (vec!["GET", "GET"], "http.methods: GET is listed twice"),
        ] {
            let spec = Spec { methods: Some(methods.into_iter().map(String::from).collect()),
                              targets: Targets::Forward };
            assert_eq!(Admission::compile(&spec).expect_err("invalid"), message);
        }
    }
}
