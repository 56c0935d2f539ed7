"""API keys through metadata (health and reflection stay open), TLS with a self-signed
certificate made here, and mTLS refusing a client without a certificate."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto.sora.v1 import sora_pb2, sora_pb2_grpc
from service.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

KEY = "s3cret-key"
REQUEST = sora_pb2.TranslateRequest(
    texts=["Hello"], target_lang="de", options=sora_pb2.DecodingOptions(max_new_tokens=4)
)


@pytest.mark.parametrize("metadata", [
    None,
    (("authorization", "Bearer wrong"),),
    (("x-api-key", "wrong"),),
    (("authorization", KEY),),  # no scheme
])
async def test_calls_without_a_valid_key_are_unauthenticated(serve: Any, metadata: Any) -> None:
    metrics = Metrics()
    served = await serve(api_keys=[KEY], metrics=metrics)
    stub = served.stub()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Translate(REQUEST, metadata=metadata)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _ = [m async for m in stub.GenerateStream(
            sora_pb2.GenerateStreamRequest(task=sora_pb2.TASK_SUMMARIZE, text="x"),
            metadata=metadata)]
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not served.grpc_records()  # nothing reached the engine
    assert metrics.failures.labels("unknown", "translate", "grpc",
                                   "unauthenticated")._value.get() == 1


@pytest.mark.parametrize("metadata", [
    (("authorization", f"Bearer {KEY}"),),
    (("authorization", f"bearer {KEY}"),),
    (("x-api-key", KEY),),
])
async def test_a_valid_key_is_accepted(serve: Any, metadata: Any) -> None:
    served = await serve(api_keys=["other", KEY])
    stub = served.stub()
    reply = await stub.Translate(REQUEST, metadata=metadata)
    assert len(reply.results) == 1
    models = await stub.ListModels(sora_pb2.ListModelsRequest(), metadata=metadata)
    assert models.default_model == "tiny"


async def test_health_and_reflection_need_no_key(serve: Any) -> None:
    served = await serve(api_keys=[KEY])
    channel = served.channel()
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (listing,) = [r async for r in stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
    assert "sora.v1.Sora" in {s.name for s in listing.list_services_response.service}


# -- TLS -------------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = {"ca": root / "ca.pem"}
    files["ca"].write_bytes(_pem(_cert("sora-test-ca", ca_key, "sora-test-ca", ca_key, ca=True)))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{who}_key"] = root / f"{who}.key"
        files[f"{who}_cert"] = root / f"{who}.pem"
        files[f"{who}_key"].write_bytes(_pem_key(key))
        files[f"{who}_cert"].write_bytes(_pem(_cert(who, key, "sora-test-ca", ca_key, ca=False)))
    return files


async def test_tls(serve: Any, pki: dict[str, Path]) -> None:
    served = await serve(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"])
    creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
    stub = sora_pb2_grpc.SoraStub(served.channel(creds))
    reply = await stub.ListModels(sora_pb2.ListModelsRequest(), timeout=10)
    assert reply.default_model == "tiny"
    # a plaintext client cannot talk to a TLS server
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().ListModels(sora_pb2.ListModelsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(serve: Any, pki: dict[str, Path]) -> None:
    served = await serve(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"],
                         tls_client_ca_file=pki["ca"])
    ca = pki["ca"].read_bytes()
    anonymous = sora_pb2_grpc.SoraStub(
        served.channel(grpc.ssl_channel_credentials(root_certificates=ca)))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await anonymous.ListModels(sora_pb2.ListModelsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client_cert"].read_bytes(),
    )
    stub = sora_pb2_grpc.SoraStub(served.channel(creds))
    reply = await stub.ListModels(sora_pb2.ListModelsRequest(), timeout=10)
    assert reply.default_model == "tiny"
