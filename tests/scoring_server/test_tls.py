"""TLS, mTLS, certificate rotation and who may report outcomes, against a real server process
with a CA, server and client certificates made here (``cryptography``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import polars as pl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from credit_core.evaluation import EvaluationLog, matched
from scoring_server.__main__ import token as token_cli
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import GMSC_DATA, GMSC_SPEC, ServerProcess, TrainedModel, metric, start_server
from tests.scoring_server.test_grpc_e2e import request
from training.compare import compare

WRITER = "outcomes.lender.example"
READER = "app.lender.example"


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A CA that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool) -> Issued:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(cn)]
        if server:
            names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        oid = x509.ExtendedKeyUsageOID
        usage = oid.SERVER_AUTH if server else oid.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Pki:
    ca: Authority
    rogue: Authority
    dir: Path
    writer: Issued
    reader: Issued

    def credentials(
        self, client: Issued | None, root: bytes | None = None
    ) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.pem if root is None else root,
            private_key=None if client is None else client.key,
            certificate_chain=None if client is None else client.cert,
        )


GOOD_TOKEN = "tok-" + "a1" * 16


@pytest.fixture(scope="module")
def tls_server(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Pki]]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = Authority("altscore test CA"), Authority("someone else's CA")
    served = ca.issue("scoring.lender.example", server=True)
    (d / "server.pem").write_bytes(served.cert)
    (d / "server.key").write_bytes(served.key)
    (d / "ca.pem").write_bytes(ca.pem)
    (d / "tokens").write_text(
        f"# who may report outcomes\n{hashlib.sha256(GOOD_TOKEN.encode()).hexdigest()} batch\n"
    )
    pki = Pki(ca, rogue, d, ca.issue(WRITER, server=False), ca.issue(READER, server=False))
    srv = start_server(
        trained.state_dir,
        tmp_path_factory.mktemp("logs") / "tls.log",
        wait_serving=True,
        credentials=pki.credentials(pki.reader),
        ALTSCORE_TLS_CERT_FILE=str(d / "server.pem"),
        ALTSCORE_TLS_KEY_FILE=str(d / "server.key"),
        ALTSCORE_TLS_CLIENT_CA_FILE=str(d / "ca.pem"),
        ALTSCORE_OUTCOME_WRITERS=f"someone.else, {WRITER}",
        ALTSCORE_OUTCOME_TOKENS_FILE=str(d / "tokens"),
        ALTSCORE_EVALUATION_DIR=str(tmp_path_factory.mktemp("evaluation")),
    )
    yield srv, pki
    srv.stop()


def score(srv: ServerProcess, credentials: grpc.ChannelCredentials, request_id: str) -> float:
    with grpc.secure_channel(srv.target, credentials) as ch:
        return pb_grpc.ScoringStub(ch).Score(request(request_id), timeout=5).pd


def test_a_client_with_the_ca_and_a_certificate_is_served(
    tls_server: tuple[ServerProcess, Pki],
) -> None:
    srv, pki = tls_server
    assert 0 < score(srv, pki.credentials(pki.reader), "tls-ok") < 1


@pytest.mark.parametrize("who", ["no client certificate", "a server it does not trust"])
def test_the_handshake_fails_without_the_ca_or_a_client_certificate(
    tls_server: tuple[ServerProcess, Pki], who: str
) -> None:
    srv, pki = tls_server
    credentials = (
        pki.credentials(None) if who == "no client certificate"
        else pki.credentials(pki.reader, root=pki.rogue.pem)
    )  # fmt: skip
    before = metric(srv, "credit_scoring_tls_handshake_failures_total")
    with pytest.raises(grpc.RpcError) as info:
        score(srv, credentials, "tls-refused")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    if who == "no client certificate":  # the server saw it fail (the other fails client-side)
        assert metric(srv, "credit_scoring_tls_handshake_failures_total") > before


def test_plaintext_clients_get_no_answer(tls_server: tuple[ServerProcess, Pki]) -> None:
    srv, _ = tls_server
    with grpc.insecure_channel(srv.target) as ch, pytest.raises(grpc.RpcError) as info:
        pb_grpc.ScoringStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def served_certificate(srv: ServerProcess, pki: Pki) -> bytes:
    """The DER certificate a new TLS connection is given."""
    ctx = ssl.create_default_context(cadata=pki.ca.pem.decode())
    ctx.set_alpn_protocols(["h2"])
    client = pki.dir / "reader.pem"
    client.write_bytes(pki.reader.cert + pki.reader.key)
    ctx.load_cert_chain(client)
    with (
        socket.create_connection(("127.0.0.1", srv.grpc_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(
    tls_server: tuple[ServerProcess, Pki],
) -> None:
    srv, pki = tls_server
    old = x509.load_der_x509_certificate(served_certificate(srv, pki))
    assert old.subject.rfc4514_string() == "CN=scoring.lender.example"
    with grpc.secure_channel(srv.target, pki.credentials(pki.reader)) as kept:
        stub = pb_grpc.ScoringStub(kept)
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        rotated = pki.ca.issue("scoring-2.lender.example", server=True)
        write_atomically(pki.dir / "server.key", rotated.key)
        write_atomically(pki.dir / "server.pem", rotated.cert)
        started = time.monotonic()
        new = x509.load_der_x509_certificate(served_certificate(srv, pki))
        while new.serial_number == old.serial_number and time.monotonic() - started < 1:
            time.sleep(0.05)
            new = x509.load_der_x509_certificate(served_certificate(srv, pki))
        assert new.subject.rfc4514_string() == "CN=scoring-2.lender.example"
        assert time.monotonic() - started < 1
        # the connection opened before keeps working, and new ones are served
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert 0 < score(srv, pki.credentials(pki.writer), "after-rotation") < 1
    # a half-written replacement is not loaded: the last good certificate stays
    (pki.dir / "server.pem").write_bytes(rotated.cert[:100])
    assert x509.load_der_x509_certificate(served_certificate(srv, pki)).serial_number == (
        new.serial_number
    )
    assert "TLS files changed but do not load" in srv.log()
    write_atomically(pki.dir / "server.pem", rotated.cert)


def report(
    srv: ServerProcess,
    credentials: grpc.ChannelCredentials,
    outcomes: list[pb.Outcome],
    token: str | None = None,
) -> int:
    with grpc.secure_channel(srv.target, credentials) as ch:
        metadata = None if token is None else [("authorization", f"Bearer {token}")]
        answer = pb_grpc.ScoringStub(ch).ReportOutcome(
            pb.ReportOutcomeRequest(outcomes=outcomes), timeout=5, metadata=metadata
        )
        return int(answer.recorded)


def test_only_listed_identities_and_tokens_may_report_outcomes(
    tls_server: tuple[ServerProcess, Pki], capsys: pytest.CaptureFixture[str]
) -> None:
    srv, pki = tls_server
    ids = iter(range(100))

    def one() -> list[pb.Outcome]:
        return [pb.Outcome(request_id=f"auth-{next(ids)}", defaulted=True)]

    assert report(srv, pki.credentials(pki.writer), one()) == 1
    assert report(srv, pki.credentials(pki.reader), one(), token=GOOD_TOKEN) == 1
    refusals = {
        "listed certificate, unknown token": (pki.writer, "not-a-token", "UNAUTHENTICATED"),
        "certificate not listed": (pki.reader, None, "PERMISSION_DENIED"),
    }
    for what, (client, token, code) in refusals.items():
        before = metric(srv, "credit_scoring_auth_denied_total", rpc="ReportOutcome", code=code)
        with pytest.raises(grpc.RpcError) as info:
            report(srv, pki.credentials(client), one(), token=token)
        assert info.value.code().name == code, what
        after = metric(srv, "credit_scoring_auth_denied_total", rpc="ReportOutcome", code=code)
        assert after == before + 1, what
    assert f"the client certificate {READER} may not call ReportOutcome" in srv.log()
    assert "not-a-token" not in srv.log()
    assert GOOD_TOKEN not in srv.log()
    assert f"reported by certificate {WRITER}" in srv.log()
    assert "reported by token batch" in srv.log()

    # a token made by the CLI, added to the file while the server runs, is taken at once
    assert token_cli(["--name", "new job"]) == 0
    printed = capsys.readouterr()
    with (pki.dir / "tokens").open("a") as f:
        f.write(printed.err)
    assert report(srv, pki.credentials(pki.reader), one(), token=printed.out.strip()) == 1
    assert "reported by token new job" in srv.log()


def test_flipped_outcomes_from_an_unlisted_client_leave_the_comparison_unchanged(
    tls_server: tuple[ServerProcess, Pki], trained: TrainedModel
) -> None:
    """The attack of issue 13: after true outcomes are in, a client flips every one."""
    from feature_kernels import load_spec

    srv, pki = tls_server
    spec = load_spec(GMSC_SPEC)
    frame = pl.read_csv(GMSC_DATA, null_values="NA").slice(3000, 300)
    writer = pki.credentials(pki.writer)
    truth: list[pb.Outcome] = []
    with grpc.secure_channel(srv.target, writer) as ch:
        stub = pb_grpc.ScoringStub(ch)
        for i, row in enumerate(frame.iter_rows(named=True)):
            numeric = {
                name: float(row[spec.column_of(name)])
                for name in spec.inputs
                if row[spec.column_of(name)] is not None
            }
            rid = f"attack-{i}"
            stub.Score(
                pb.ScoreRequest(request_id=rid, applicant=pb.Applicant(numeric=numeric)), timeout=5
            )
            truth.append(pb.Outcome(request_id=rid, defaulted=bool(row["SeriousDlqin2yrs"])))
    assert report(srv, writer, truth) == len(truth)
    log = EvaluationLog(Path(srv_env(srv, "ALTSCORE_EVALUATION_DIR")))

    def champion_auc() -> float:
        deadline = time.monotonic() + 10
        while True:  # predictions reach the log within its flush interval (1 s)
            m = matched(log).filter(pl.col("request_id").str.starts_with("attack-"))
            if m.height == len(truth) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert m.height == len(truth)
        auc = compare(m, model_name="altscore-gmsc", n_boot=50).variants["champion"].auc
        assert auc is not None
        return auc

    before = champion_auc()
    assert before > 0.75
    flipped = [pb.Outcome(request_id=o.request_id, defaulted=not o.defaulted) for o in truth]
    with pytest.raises(grpc.RpcError) as info:
        report(srv, pki.credentials(pki.reader), flipped)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert champion_auc() == before


def srv_env(srv: ServerProcess, name: str) -> str:
    """A variable of the server's environment (Popen does not keep it: read from /proc)."""
    env = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")
    for item in env:
        key, _, val = item.decode().partition("=")
        if key == name:
            return val
    raise KeyError(name)


def test_a_contradicting_outcome_is_refused_and_a_correction_is_kept_with_its_sender(
    tls_server: tuple[ServerProcess, Pki],
) -> None:
    srv, pki = tls_server
    writer = pki.credentials(pki.writer)
    assert report(srv, writer, [pb.Outcome(request_id="c-1", defaulted=True)]) == 1
    # a retry: accepted, not written again
    with grpc.secure_channel(srv.target, writer) as ch:
        again = pb_grpc.ScoringStub(ch).ReportOutcome(
            pb.ReportOutcomeRequest(outcomes=[pb.Outcome(request_id="c-1", defaulted=True)]),
            timeout=5,
        )
    assert (again.recorded, again.unchanged) == (0, 1)
    # a contradiction fails the whole call, naming it
    with pytest.raises(grpc.RpcError) as info:
        report(
            srv,
            writer,
            [pb.Outcome(request_id="c-2", defaulted=True), pb.Outcome(request_id="c-1")],
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(info.value)
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("OUTCOME_CONFLICT", "outcomes[1]")
    ]
    assert "correction=true" in failure.violations[0].description
    # nothing of it was written: c-2 is still free
    assert report(srv, writer, [pb.Outcome(request_id="c-2", defaulted=False)]) == 1
    # an explicit correction is written, with who sent it
    fixed = pb.Outcome(request_id="c-1", defaulted=False, correction=True)
    assert report(srv, pki.credentials(pki.reader), [fixed], token=GOOD_TOKEN) == 1
    log = EvaluationLog(Path(srv_env(srv, "ALTSCORE_EVALUATION_DIR")))
    c1 = log.read_outcomes().filter(pl.col("request_id") == "c-1")
    assert c1.select("defaulted", "correction", "reporter").rows() == [
        (True, False, f"certificate {WRITER}"),
        (False, True, "token batch"),
    ]
