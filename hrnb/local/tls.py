"""The local certificate authority of the secured local stack, made at ``hrnb local up``.

Why: the security plugin needs TLS on HTTP and transport, and the plugin's demo certificates are
public. One CA per state directory signs the node's certificate, the admin certificate (the
plugin's super-admin DN) and the SigV4 front's certificate; clients trust ``ca.pem`` and nothing
disables verification. Keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hrnb.provision.state import _write_private

CA_NAME = "hrnb local CA"
NODE_NAME = "hrnb-local-node"
ADMIN_NAME = "hrnb-local-admin"
FRONT_NAME = "hrnb-local-front"
_VALID_DAYS = 825


@dataclass(frozen=True)
class LocalTls:
    """Where the CA and the certificates signed by it live (PEM; keys in PKCS#8)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}-key.pem"

    @staticmethod
    def dn(name: str) -> str:
        """The certificate's subject as the security plugin writes it (RFC 2253)."""
        return f"CN={name},O=hrnb"


def ensure_local_tls(directory: Path) -> LocalTls:
    """The CA and the node, admin and front certificates, made once per state directory."""
    tls = LocalTls(directory)
    names = (NODE_NAME, ADMIN_NAME, FRONT_NAME)
    if tls.ca.exists() and all(tls.cert(n).exists() and tls.key(n).exists() for n in names):
        return tls
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(CA_NAME, ca_key, ca_key, None, ca=True)
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, ca_key, ca_cert, ca=False)
        _write_private(tls.key(name), _key_pem(key))
        _write_private(tls.cert(name), _cert_pem(cert))
    # The CA's key is not kept: nothing more is ever signed; a new CA comes with a new state dir.
    _write_private(tls.ca, _cert_pem(ca_cert))
    return tls


def _certificate(name: str, key: ec.EllipticCurvePrivateKey,
                 issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, *,
                 ca: bool) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hrnb"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False).add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
        ]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
