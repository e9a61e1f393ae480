"""RS256 verification from RFC 8017's arithmetic (RSASSA-PKCS1-v1_5 with SHA-256).

The project's dev dependencies carry no RSA library (PyJWT needs `cryptography` for RS256),
and checking the signature with nothing but the published JWK also shows the tokens are plain
standard RS256 that any client library would accept.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

# DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _integer(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def verified_claims(token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """The token's claims when its RS256 signature verifies with `jwk`; else AssertionError."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    assert header["alg"] == "RS256", header
    modulus, exponent = _integer(jwk["n"]), _integer(jwk["e"])
    size = (modulus.bit_length() + 7) // 8
    signature = int.from_bytes(b64url_decode(signature_b64), "big")
    encoded = pow(signature, exponent, modulus).to_bytes(size, "big")
    digest = hashlib.sha256(f"{header_b64}.{payload_b64}".encode()).digest()
    digest_info = SHA256_DIGEST_INFO + digest
    padding = b"\xff" * (size - 3 - len(digest_info))
    expected = b"\x00\x01" + padding + b"\x00" + digest_info
    assert encoded == expected, "RS256 signature does not verify with the published key"
    return json.loads(b64url_decode(payload_b64))
