//! DNS for the data plane, sans-I/O: which client queries may pass, what an executor's reply
//! means, and what the client gets. The wire format (names, records, canonical rdata,
//! compression) is the `domain` crate's.
//!
//! * [`parse_query`] checks every client message. A query that is not a plain QUERY with one
//!   IN question never reaches an executor: it becomes a [`Refusal`], whose reply is the
//!   client's answer (FORMERR, NOTIMP, REFUSED, BADVERS) or nothing (responses and messages
//!   shorter than a header are dropped). Heterogeneous servers have no single right answer to
//!   some questions, so any answer one of them gives is a dissent a client can cause at will:
//!   the reserved type 0 and every type of the meta range 128-255 (ANY, zone transfers, MAILA,
//!   MAILB, unassigned) are refused, as are the types `dns.refuse_types` lists and names with
//!   a NUL octet in a label. [`Query::upstream_wire`] is the
//!   one normalised query every executor receives: the client's ID, question, RD/CD/AD and DO
//!   bits and our EDNS payload size, never an EDNS option (no cookie, NSID or padding).
//! * [`parse_reply`] checks an executor's reply against the query and gathers its records into
//!   RRsets as a resolver does: one per owner, class and type (and type covered, for
//!   signatures), duplicates dropped, the smallest TTL for all, the last record only for a
//!   singleton type (CNAME, DNAME, SOA, NSEC, NXT). [`Reply::output`] is the arbiter's view:
//!   the head holds the rcode, the compared flags and whether EDNS was used; the raw part holds
//!   the voted sections as sorted lines, one per record, with lowercased owner names and rdata
//!   in DNSSEC canonical form as RFC 3597 hex (servers differ in the case they echo and in
//!   record order); the DNS rule of [`crate::canon`] compares TTLs.
//! * [`encode_reply`] re-encodes the winning reply under the client's ID and question with
//!   only what was voted; a reply larger than a UDP client takes becomes its header and
//!   question with TC set, so the client retries over TCP. [`servfail`] fails closed, naming
//!   the reason in an Extended DNS Error when the client speaks EDNS.
//!
//! Where `domain` reads less than a full DNS library might: EDNS options are checked only for
//! their framing, and the rdata of types it does not know (AFSDB, RT, KX, PX, SIG, NXT, A6,
//! HIP, ...) is compared as sent, names inside it in the case the server used.

mod encode;
mod query;
mod reply;

#[cfg(test)]
mod tests;


use std::sync::Arc;

use serde::Deserialize;

use crate::canon::BodyRule;

pub use encode::{encode_reply, refused, servfail};
pub use query::{parse_query, Query, Refusal};
pub use reply::{parse_reply, Reply};

/// What every client accepts over UDP (RFC 1035).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The two-byte length prefix's limit: the largest message over TCP.
pub const MAX_TCP_MESSAGE: usize = 65535;

const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;
/// The header flags that may be compared between executors, in the order they are listed.
const COMPARABLE: [(&str, u16); 6] =
    [("AA", AA), ("TC", TC), ("RD", RD), ("RA", RA), ("AD", AD), ("CD", CD)];
/// Flags the client sets that executors see.
const FROM_CLIENT: u16 = RD | CD | AD;
/// Flags of the winning reply the client sees.
const FROM_WINNER: u16 = AA | TC | RA | AD;
/// Flags every reply of ours echoes from the query: opcode, RD, CD.
const ECHOED: u16 = OPCODE | RD | CD;
/// The rcode of a reply that cannot be given.
const SERVFAIL: u16 = 2;
const REFUSED: u16 = 5;

/// The `dns` section of a snapshot, as the control plane sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    pub flags: Vec<String>,
    /// ``compare`` (within ``ttl_tolerance`` seconds) or ``mask``.
    pub ttl: String,
    pub ttl_tolerance: i64,
    /// ``all``, or ``referrals``: the additional section counts only in referrals.
    pub additional: String,
    pub udp_payload: u32,
    pub max_udp_inflight: usize,
    /// Further question types answered REFUSED, never forwarded.
    pub refuse_types: Vec<u16>,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec { flags: ["AA", "TC", "RD", "RA"].map(String::from).to_vec(),
               ttl: "compare".into(), ttl_tolerance: 0, additional: "all".into(),
               udp_payload: 1232, max_udp_inflight: 1024, refuse_types: Vec::new() }
    }
}

/// What takes part in the vote, how large replies may be, and how many UDP queries are
/// answered at once.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The header flags compared between executors.
    compared: u16,
    /// The additional section is voted on (and sent) only in referrals, where it is glue;
    /// elsewhere it is optional data servers fill differently.
    referrals_only: bool,
    /// The gateway's own EDNS UDP payload size, offered to clients and executors.
    pub udp_payload: u16,
    pub max_udp_inflight: usize,
    /// The configured question types refused before fan-out.
    refused: Vec<u16>,
    /// The canonicaliser's rule for outputs: TTLs within the tolerance, or masked.
    rule: Arc<BodyRule>,
}

impl Settings {
    /// Compile ``spec``; an error names the field.
    pub fn compile(spec: &Spec) -> Result<Settings, String> {
        let mut compared = 0;
        let mut unknown = Vec::new();
        for name in &spec.flags {
            match COMPARABLE.iter().find(|(n, _)| n == name) {
                Some((_, bit)) => compared |= bit,
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let known: Vec<&str> = COMPARABLE.iter().map(|(n, _)| *n).collect();
            return Err(format!("dns.flags: unknown {} (expected some of {})", unknown.join(", "),
                               known.join(", ")));
        }
        let tolerance = u32::try_from(spec.ttl_tolerance)
            .map_err(|_| "dns.ttl_tolerance: must be from 0 to 4294967295".to_owned())?;
        let tolerance = match spec.ttl.as_str() {
            "compare" => Some(tolerance),
            "mask" => None,
            other => return Err(format!("dns.ttl: expected compare or mask, got {other:?}")),
        };
        let referrals_only = match spec.additional.as_str() {
            "all" => false,
            "referrals" => true,
            other => return Err(format!("dns.additional: expected all or referrals, got \
                                         {other:?}")),
        };
        let udp_payload = u16::try_from(spec.udp_payload).ok()
            .filter(|p| *p >= MIN_UDP_PAYLOAD)
            .ok_or_else(|| format!("dns.udp_payload: must be from {MIN_UDP_PAYLOAD} to \
                                    {MAX_TCP_MESSAGE}"))?;
        if spec.max_udp_inflight == 0 {
            return Err("dns.max_udp_inflight: must be >= 1".into());
        }
        Ok(Settings { compared, referrals_only, udp_payload,
                      max_udp_inflight: spec.max_udp_inflight,
                      refused: spec.refuse_types.clone(),
                      rule: Arc::new(BodyRule::dns(tolerance)) })
    }

    /// Whether ``dns.refuse_types`` lists ``qtype``.
    fn refuses(&self, qtype: domain::base::Rtype) -> bool {
        self.refused.contains(&qtype.to_int())
    }

    /// The canonicaliser's rule for this boundary's outputs.
    pub fn rule(&self) -> &Arc<BodyRule> {
        &self.rule
    }

    /// The compared flags of ``flags``, by name.
    fn head_flags(&self, flags: u16) -> String {
        let names: Vec<&str> = COMPARABLE.iter()
            .filter(|(_, bit)| self.compared & bit != 0 && flags & bit != 0)
            .map(|(name, _)| *name).collect();
        names.join(" ")
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::compile(&Spec::default()).expect("the defaults are valid")
    }
}
