"""HTTPS and mutual TLS from the tls_* settings (certificates made with openssl)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=sora-test-ca", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf",
                cwd=d)
    return d


def context(pki: Path, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    return ctx


def test_https(start_server: Any, pki: Path) -> None:
    srv = start_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    url = f"https://127.0.0.1:{srv.server.http_port}/health/ready"
    assert httpx.get(url, verify=context(pki, False)).status_code == 200


def test_mutual_tls_requires_a_client_certificate(start_server: Any, pki: Path) -> None:
    srv = start_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                       tls_client_ca_file=pki / "ca.pem")
    url = f"https://127.0.0.1:{srv.server.http_port}/health/ready"
    assert httpx.get(url, verify=context(pki, True)).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=context(pki, False))
