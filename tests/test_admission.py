"""Zero-knowledge admission: the Schnorr proof, the verifier's state, the mutual handshake.

The group maths is checked against an independent pure-Python Ed25519 (RFC 8032's reference
arithmetic), not only against libsodium, which the implementation itself uses.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import stat
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.identity import (
    Admission,
    Admitted,
    Identity,
    IdentityError,
    Initiator,
    Proof,
    Refusal,
    Responder,
    Trust,
    Verifier,
    load_identity,
    load_trust,
    parse_public_key,
    prove,
    public_key,
    secret_scalar,
    verify,
)
from endosec.identity.cli import identity as identity_cli
from endosec.identity.schnorr import DOMAIN, ORDER

# -- an independent Ed25519 group (RFC 8032, section 5.1, affine coordinates) ----------------

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    assert (x * x - x2) % P == 0, "not on the curve"
    return P - x if x & 1 != sign else x


BASE = (_x(4 * pow(5, P - 2, P) % P, 0), 4 * pow(5, P - 2, P) % P)


def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P,
            (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P)


def mul(n: int, point: tuple[int, int]) -> tuple[int, int]:
    out = (0, 1)
    while n:
        if n & 1:
            out = add(out, point)
        point, n = add(point, point), n >> 1
    return out


def encode(point: tuple[int, int]) -> bytes:
    return (point[1] | (point[0] & 1) << 255).to_bytes(32, "little")


def decode(raw: bytes) -> tuple[int, int]:
    n = int.from_bytes(raw, "little")
    y = n & ((1 << 255) - 1)
    return _x(y, n >> 255), y


def challenge(proof: Proof) -> int:
    """c, from the transcript as docs/identity.md specifies it."""
    h = hashlib.sha512()
    for part in (DOMAIN, proof.key, proof.commitment, proof.nonce, proof.verifier,
                 proof.role.encode(), struct.pack(">d", proof.expiry)):
        h.update(len(part).to_bytes(2, "big") + part)
    return int.from_bytes(h.digest(), "little") % ORDER


# -- helpers -------------------------------------------------------------------------------

def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(bytes([seed])).digest())


GATEWAY, AGENT, OTHER = key(1), key(2), key(3)
NONCE = b"n" * 32


def a_proof(prover: Ed25519PrivateKey = GATEWAY, *, verifier: Ed25519PrivateKey = AGENT,
            nonce: bytes = NONCE, role: str = "gateway", expiry: float = 100.0) -> Proof:
    return prove(prover, verifier=public_key(verifier), nonce=nonce, role=role, expiry=expiry)


def verifier(trusted: tuple[Ed25519PrivateKey, ...] = (GATEWAY,), *,
             authorities: tuple[x509.Certificate, ...] = ()) -> Verifier:
    return Verifier(public_key(AGENT), Trust(frozenset(public_key(k) for k in trusted),
                                             authorities), role="gateway")


def ts(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def certificate(subject: Ed25519PrivateKey, issuer: Ed25519PrivateKey, *, start: float = 0.0,
                end: float = 10_000.0, name: str = "endosec test CA",
                cn: str = "host") -> x509.Certificate:
    def dn(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (x509.CertificateBuilder().subject_name(dn(cn)).issuer_name(dn(name))
            .public_key(subject.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(ts(start)).not_valid_after(ts(end)).sign(issuer, None))


def authority(ca: Ed25519PrivateKey, name: str = "endosec test CA") -> x509.Certificate:
    return certificate(ca, ca, name=name, cn=name)


# -- the proof -----------------------------------------------------------------------------

def test_the_secret_scalar_is_rfc_8032s_for_the_key_in_the_pem_file(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(identity_cli, ["key", "--out", str(tmp_path / "id.pem")])
    assert result.exit_code == 0, result.output
    loaded = load_identity(tmp_path / "id.pem", None).key
    assert result.output.strip() == loaded.public_key().public_bytes_raw().hex()
    digest = bytearray(hashlib.sha512(loaded.private_bytes_raw()).digest()[:32])
    digest[0] &= 248
    digest[31] = (digest[31] & 127) | 64
    a = int.from_bytes(digest, "little")
    assert int.from_bytes(secret_scalar(loaded), "little") == a % ORDER
    assert encode(mul(a, BASE)) == loaded.public_key().public_bytes_raw()
    assert encode(mul(a % ORDER, BASE)) == loaded.public_key().public_bytes_raw()


def test_a_proof_holds_and_satisfies_the_group_equation_computed_independently() -> None:
    proof = a_proof()
    assert verify(proof)
    s = int.from_bytes(proof.response, "little")
    assert s < ORDER
    left = mul(s, BASE)
    right = add(decode(proof.commitment), mul(challenge(proof), decode(proof.key)))
    assert left == right
    assert proof.key == public_key(GATEWAY)
    assert a_proof().commitment != proof.commitment, "a fresh commitment every time"


@pytest.mark.parametrize("change", [
    {"key": public_key(OTHER)},
    {"verifier": public_key(OTHER)},
    {"nonce": b"m" * 32},
    {"role": "agent"},
    {"expiry": 100.001},
    {"commitment": public_key(OTHER)},
    {"response": (1).to_bytes(32, "little")},
])
def test_changing_anything_in_a_proof_breaks_it(change: dict[str, object]) -> None:
    assert not verify(dataclasses.replace(a_proof(), **change))  # type: ignore[arg-type]


def test_a_response_must_be_canonical_and_points_valid() -> None:
    proof = a_proof()
    s = int.from_bytes(proof.response, "little")
    assert not verify(dataclasses.replace(proof, response=(s + ORDER).to_bytes(32, "little")))
    identity = encode((0, 1))
    assert not verify(dataclasses.replace(proof, commitment=identity))
    assert not verify(dataclasses.replace(proof, key=identity))
    assert not verify(dataclasses.replace(proof, response=bytes(32)))


FIELDS = ("none", "key", "verifier", "nonce", "role", "expiry", "commitment", "response")


@settings(max_examples=60, deadline=None)
@given(prover=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32),
       nonce=st.binary(min_size=16, max_size=64), expiry=st.floats(-1e12, 1e12),
       field=st.sampled_from(FIELDS), noise=st.binary(min_size=32, max_size=32))
def test_a_proof_holds_exactly_when_nothing_was_altered(
        prover: bytes, other: bytes, nonce: bytes, expiry: float, field: str,
        noise: bytes) -> None:
    prover_key = Ed25519PrivateKey.from_private_bytes(prover)
    other_key = Ed25519PrivateKey.from_private_bytes(other)
    proof = prove(prover_key, verifier=public_key(other_key), nonce=nonce, role="agent",
                  expiry=expiry)
    altered = {
        "none": proof,
        "key": dataclasses.replace(proof, key=public_key(other_key)),
        "verifier": dataclasses.replace(proof, verifier=noise),
        "nonce": dataclasses.replace(proof, nonce=noise),
        "role": dataclasses.replace(proof, role="gateway"),
        "expiry": dataclasses.replace(proof, expiry=expiry + 1),
        "commitment": dataclasses.replace(proof, commitment=public_key(other_key)),
        "response": dataclasses.replace(proof, response=noise),
    }[field]
    assert verify(altered) == (altered == proof)
    assert Proof.from_dict(proof.to_dict()) == proof


def test_a_malformed_proof_message_is_a_value_error() -> None:
    good = a_proof().to_dict()
    for bad in ({**good, "key": "zz"}, {**good, "nonce": "00"}, {**good, "expiry": "soon"},
                {**good, "expiry": True}, {**good, "role": 3}, {"key": good["key"]},
                {**good, "response": good["response"][:-2]}):
        with pytest.raises(ValueError):
            Proof.from_dict(bad)


# -- the verifier --------------------------------------------------------------------------

def test_a_proof_over_a_live_nonce_is_admitted_once() -> None:
    v = verifier()
    nonce = v.challenge(0.0).nonce
    proof = a_proof(nonce=nonce, expiry=30.0)
    verdict = v.check(proof, None, 1.0)
    assert not isinstance(verdict, Refusal) and verdict.key == public_key(GATEWAY)
    again = v.check(proof, None, 2.0)
    assert isinstance(again, Refusal) and again.reason == "replayed-nonce"


@pytest.mark.parametrize(("make", "now", "reason"), [
    (lambda n: a_proof(nonce=b"x" * 32, expiry=30.0), 1.0, "unknown-nonce"),
    (lambda n: a_proof(nonce=n, expiry=30.0), 31.0, "unknown-nonce"),  # the nonce expired
    (lambda n: a_proof(nonce=n, expiry=0.5), 1.0, "expired-proof"),
    (lambda n: a_proof(nonce=n, verifier=OTHER, expiry=30.0), 1.0, "wrong-verifier"),
    (lambda n: a_proof(nonce=n, role="agent", expiry=30.0), 1.0, "wrong-role"),
    (lambda n: a_proof(OTHER, nonce=n, expiry=30.0), 1.0, "unknown-key"),
    (lambda n: dataclasses.replace(a_proof(nonce=n, expiry=30.0),
                                   response=(7).to_bytes(32, "little")), 1.0, "forged-proof"),
    (lambda n: dataclasses.replace(a_proof(OTHER, nonce=n, expiry=30.0),
                                   key=public_key(GATEWAY)), 1.0, "forged-proof"),
])
def test_a_proof_is_refused_saying_why(make, now: float, reason: str) -> None:
    v = verifier()
    proof = make(v.challenge(0.0).nonce)
    verdict = v.check(proof, None, now)
    assert isinstance(verdict, Refusal) and verdict.reason == reason, verdict
    assert verdict.key == proof.key and str(verdict).startswith(reason)


def test_nonces_out_at_once_are_bounded_the_oldest_forgotten() -> None:
    v = Verifier(public_key(AGENT), Trust(frozenset({public_key(GATEWAY)})), role="gateway",
                 outstanding=2)
    first, second, third = (v.challenge(0.0).nonce for _ in range(3))
    refused = v.check(a_proof(nonce=first, expiry=30.0), None, 1.0)
    assert isinstance(refused, Refusal) and refused.reason == "unknown-nonce"
    for nonce in (second, third):
        assert not isinstance(v.check(a_proof(nonce=nonce, expiry=30.0), None, 1.0), Refusal)


# -- admission by authority ----------------------------------------------------------------

CA, ROGUE_CA = key(10), key(11)


@pytest.mark.parametrize(("cert", "reason"), [
    (lambda: certificate(GATEWAY, CA), None),
    (lambda: certificate(GATEWAY, ROGUE_CA), "bad-certificate"),  # same issuer name, other key
    (lambda: certificate(GATEWAY, ROGUE_CA, name="rogue CA"), "bad-certificate"),
    (lambda: certificate(GATEWAY, CA, end=50.0), "bad-certificate"),  # expired at 60
    (lambda: certificate(GATEWAY, CA, start=100.0), "bad-certificate"),  # not yet valid
    (lambda: certificate(OTHER, CA), "bad-certificate"),  # for another key
    (lambda: None, "unknown-key"),
])
def test_a_key_certified_by_the_authority_is_admitted_with_its_proof(cert, reason) -> None:
    v = verifier((), authorities=(authority(CA),))
    proof = a_proof(nonce=v.challenge(60.0).nonce, expiry=90.0)
    verdict = v.check(proof, cert(), 60.0)
    if reason is None:
        assert not isinstance(verdict, Refusal)
        assert verdict.until == 10_000.0  # trusted no longer than the certificate
    else:
        assert isinstance(verdict, Refusal) and verdict.reason == reason, verdict


def test_a_certificate_does_not_spare_the_proof_of_possession() -> None:
    v = verifier((), authorities=(authority(CA),))
    forged = dataclasses.replace(a_proof(nonce=v.challenge(0.0).nonce, expiry=30.0),
                                 response=(5).to_bytes(32, "little"))
    verdict = v.check(forged, certificate(GATEWAY, CA), 1.0)
    assert isinstance(verdict, Refusal) and verdict.reason == "forged-proof"


# -- the whitelist ---------------------------------------------------------------------------

def test_admission_expires_at_the_configured_time_and_proving_again_renews_it() -> None:
    admission = Admission(verifier(), admit_for=100.0)
    first = admission.admit(a_proof(nonce=admission.verifier.challenge(0.0).nonce,
                                    expiry=30.0), None, 0.0, session=b"s1")
    assert isinstance(first, Admitted) and first.until == 100.0
    gateway = public_key(GATEWAY)
    assert admission.admitted(gateway, 99.9) == 100.0
    assert admission.session(b"s1", 99.9) == gateway
    assert admission.admitted(gateway, 100.0) is None
    assert admission.session(b"s1", 100.0) is None
    assert admission.session(b"unknown", 1.0) is None
    renewed = admission.admit(a_proof(nonce=admission.verifier.challenge(90.0).nonce,
                                      expiry=120.0), None, 90.0, session=b"s2")
    assert isinstance(renewed, Admitted) and renewed.until == 190.0
    assert admission.admitted(gateway, 150.0) == 190.0
    assert admission.session(b"s2", 150.0) == gateway
    assert admission.session(b"s1", 150.0) is None
    assert admission.admitted(gateway, 190.0) is None


def test_admission_ends_with_the_certificate_and_sessions_per_key_are_bounded() -> None:
    admission = Admission(verifier((), authorities=(authority(CA),)), admit_for=100.0,
                          sessions_per_key=2)
    cert = certificate(GATEWAY, CA, end=9_950.0)
    sessions = []
    for i in range(3):
        now = 9_900.0 + i
        done = admission.admit(a_proof(nonce=admission.verifier.challenge(now).nonce,
                                       expiry=now + 30), cert, now)
        assert isinstance(done, Admitted) and done.until == 9_950.0
        sessions.append(done.session)
    assert [admission.session(s, 9_903.0) for s in sessions] == [
        None, public_key(GATEWAY), public_key(GATEWAY)]


def test_sessions_ended_early_are_not_counted_and_a_reused_id_starts_afresh() -> None:
    admission = Admission(verifier((OTHER,), authorities=(authority(CA),)),
                          admit_for=100.0, sessions_per_key=2)
    cert, short = certificate(GATEWAY, CA), certificate(GATEWAY, CA, end=10.0)

    def admit(prover: Ed25519PrivateKey, now: float, session: bytes,
              by: x509.Certificate | None = cert) -> Admitted:
        done = admission.admit(a_proof(prover, nonce=admission.verifier.challenge(now).nonce,
                                       expiry=now + 30), by if prover is GATEWAY else None,
                               now, session=session)
        assert isinstance(done, Admitted), done
        return done

    admit(GATEWAY, 0.0, b"long")  # until 100
    admit(GATEWAY, 1.0, b"short", short)  # until 10, behind the longer one
    admit(GATEWAY, 20.0, b"new")  # "short" has ended: "long" is kept
    assert admission.session(b"long", 21.0) == public_key(GATEWAY)
    assert admission.session(b"new", 21.0) == public_key(GATEWAY)
    admit(OTHER, 22.0, b"new")  # the same id for another key: it is that key's now
    assert admission.session(b"new", 23.0) == public_key(OTHER)
    assert admission.admitted(public_key(GATEWAY), 23.0) == 100.0
    for i in range(3):  # evictions after the id moved do not trip over it
        admit(GATEWAY, 30.0 + i, bytes([i]))
    assert admission.session(b"new", 40.0) == public_key(OTHER)


def test_a_refused_proof_whitelists_nothing() -> None:
    admission = Admission(verifier(), admit_for=100.0)
    refused = admission.admit(a_proof(OTHER, nonce=admission.verifier.challenge(0.0).nonce,
                                      expiry=30.0), None, 1.0)
    assert isinstance(refused, Refusal) and refused.reason == "unknown-key"
    assert admission.admitted(public_key(OTHER), 1.0) is None


# -- the mutual handshake --------------------------------------------------------------------

def parties(agent_trusts: Ed25519PrivateKey = GATEWAY,
            gateway_expects: Ed25519PrivateKey = AGENT) -> tuple[Initiator, Responder]:
    gateway = Initiator(Identity(GATEWAY), Verifier(
        public_key(GATEWAY), Trust(frozenset({public_key(gateway_expects)})), role="agent"))
    agent = Responder(Identity(AGENT), Admission(Verifier(
        public_key(AGENT), Trust(frozenset({public_key(agent_trusts)})), role="gateway"),
        admit_for=60.0))
    return gateway, agent


def test_the_gateway_and_the_agent_admit_each_other() -> None:
    gateway, agent = parties()
    answer = agent.hello(gateway.hello(1_000.0), 1_000.0)
    assert isinstance(answer, dict)
    message = gateway.proof(answer, 1_000.5)
    assert isinstance(message, dict)
    admitted = agent.admit(message, 1_001.0)
    assert isinstance(admitted, Admitted) and admitted.key == public_key(GATEWAY)
    welcome = Responder.welcome(admitted, 1_001.0)
    assert welcome["for"] == 60.0
    assert agent.admission.session(bytes.fromhex(welcome["session"]), 1_050.0) == \
        public_key(GATEWAY)
    replayed = agent.admit(message, 1_002.0)
    assert isinstance(replayed, Refusal) and replayed.reason == "replayed-nonce"


def test_each_side_refuses_a_key_it_does_not_trust() -> None:
    gateway, agent = parties(agent_trusts=OTHER)
    refused = agent.hello(gateway.hello(0.0), 0.0)
    assert isinstance(refused, Refusal) and refused.reason == "unknown-key"
    gateway, agent = parties(gateway_expects=OTHER)
    answer = agent.hello(gateway.hello(0.0), 0.0)
    assert isinstance(answer, dict)
    refused = gateway.proof(answer, 0.0)
    assert isinstance(refused, Refusal) and refused.reason == "unknown-key"


def test_the_agents_proof_cannot_be_reflected_as_the_gateways() -> None:
    """Even where both sides share a key, a proof made as the agent never admits a gateway."""
    shared = Identity(AGENT)
    trust = Trust(frozenset({public_key(AGENT)}))
    agent = Responder(shared, Admission(Verifier(public_key(AGENT), trust, role="gateway"),
                                        admit_for=60.0))
    attacker = Initiator(Identity(OTHER), Verifier(public_key(OTHER), trust,
                                                           role="agent"))
    first = agent.hello({**attacker.hello(0.0), "key": public_key(AGENT).hex()}, 0.0)
    assert isinstance(first, dict)
    # ask the agent to prove over its own nonce, then present that proof as the gateway's
    second = agent.hello({"key": public_key(AGENT).hex(), "nonce": first["nonce"],
                          "expiry": first["expiry"]}, 0.0)
    assert isinstance(second, dict)
    refused = agent.admit({"proof": second["proof"]}, 1.0)
    assert isinstance(refused, Refusal) and refused.reason == "wrong-role"


def test_a_malformed_handshake_message_is_a_value_error() -> None:
    gateway, agent = parties()
    for bad in ({}, {"key": "zz", "nonce": "00" * 32, "expiry": 1.0},
                {**gateway.hello(0.0), "expiry": "later"},
                {**gateway.hello(0.0), "certificate": "not a certificate"}):
        with pytest.raises(ValueError):
            agent.hello(bad, 0.0)
    with pytest.raises(ValueError):
        agent.admit({"proof": "none"}, 0.0)


# -- keys and their settings -----------------------------------------------------------------

def test_identity_key_refuses_to_overwrite_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    runner = CliRunner()
    first = runner.invoke(identity_cli, ["key", "--out", str(path)])
    assert first.exit_code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again = runner.invoke(identity_cli, ["key", "--out", str(path)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert path.read_bytes() == before
    shown = runner.invoke(identity_cli, ["show", str(path)])
    assert shown.exit_code == 0 and shown.output == first.output


def test_key_settings_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"^identity: cannot read .*missing\.pem"):
        load_identity(tmp_path / "missing.pem", None)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(IdentityError, match=r"^identity: .* not an unencrypted PEM private key"):
        load_identity(tmp_path / "junk.pem", None)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(IdentityError, match=r"^identity: .* not an Ed25519 key"):
        load_identity(tmp_path / "rsa.pem", None)
    (tmp_path / "id.pem").write_bytes(GATEWAY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "cert.pem").write_bytes(certificate(OTHER, CA).public_bytes(
        serialization.Encoding.PEM))
    with pytest.raises(IdentityError, match=r"^certificate: .* for another key"):
        load_identity(tmp_path / "id.pem", tmp_path / "cert.pem")
    with pytest.raises(IdentityError, match=r"^keys\[1\]: not an Ed25519 public key"):
        load_trust([public_key(AGENT).hex(), "abcd"], None)
    with pytest.raises(IdentityError, match=r"^authority: .* holds no PEM certificate"):
        load_trust([], tmp_path / "junk.pem")


def test_public_keys_are_read_as_hex_or_pem() -> None:
    raw = public_key(AGENT)
    pem = AGENT.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert parse_public_key(raw.hex()) == parse_public_key(pem.decode()) == raw
    assert parse_public_key(raw.hex().upper()) == raw
    for bad in ("", "00" * 32, raw.hex()[:-2], "-----BEGIN PUBLIC KEY-----\nxx\n"):
        with pytest.raises(ValueError):
            parse_public_key(bad)
