"""Throwaway TLS material for tests, made with the ``openssl`` command: a CA, a broker
certificate for 127.0.0.1/localhost (PEM, and PKCS12 for the Java broker) and a client
certificate. EC P-256 keys, valid two days."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

KEYSTORE_PASSWORD = "ltrr-test-keystore"


@dataclass(frozen=True)
class CertFiles:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    server_p12: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def _leaf(cwd: Path, name: str, usage: str, alt_names: str | None) -> None:
    _openssl(
        cwd,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    ext = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyAgreement",
        f"extendedKeyUsage={usage}",
        "authorityKeyIdentifier=keyid",
        "subjectKeyIdentifier=hash",
    ]
    if alt_names:
        ext.append(f"subjectAltName={alt_names}")
    (cwd / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
    )


def make_certs(directory: Path) -> CertFiles:
    """Write the CA, broker and client material into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    _leaf(directory, "client", "clientAuth", None)
    _openssl(
        directory,
        "pkcs12",
        "-export",
        "-in",
        "server.pem",
        "-inkey",
        "server.key",
        "-certfile",
        "ca.pem",
        "-name",
        "kafka",
        "-out",
        "server.p12",
        "-passout",
        f"pass:{KEYSTORE_PASSWORD}",
    )
    return CertFiles(
        dir=directory,
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        server_p12=directory / "server.p12",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
