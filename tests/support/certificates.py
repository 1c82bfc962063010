"""Self-signed certificates for the TLS tests, made by openssl in the test's own folder."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_certificate(directory: Path, *, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate and key for ``name`` only: an IP address, or a DNS name such as ``localhost``."""
    kind = "IP" if name.replace(".", "").isdigit() or ":" in name else "DNS"
    certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={kind}:{name}", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    return certificate, key
