"""Tokens a hardened service must refuse, made from a genuine one.

Each bad token differs from the genuine one in exactly one way, so a refusal can only be
for that reason: the wrong signature and the tampered claims keep the genuine header
(its algorithm, its key id), and the expired token is signed with the app's own
algorithm. An expired token needs the signing key: the shared secret for HS*, which a
target with container access can reveal; for RS*/ES*/PS*/EdDSA the private key, which
the suite never has, so that token is not made (signing it with another algorithm would
get it refused for the algorithm, not for the expiry, and prove nothing).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

KINDS: tuple[str, ...] = ("wrong-signature", "tampered-claims", "alg-none", "expired")
NOBODY_SUB = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class SigningKeySource:
    """Where a target reveals the key its tokens are signed with: an environment variable
    of one service (the `apex_token_key_source` fixture says which)."""

    service: str
    variable: str

    def find(self, environment: Mapping[str, str]) -> str | None:
        return environment.get(self.variable) or None


@dataclass(frozen=True)
class BadTokens:
    """Kind -> token to be refused, and kind -> why a token of that kind could not be made."""

    tokens: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def header_of(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def bad_tokens(genuine: str, secret: str | None = None, key_source: str = "") -> BadTokens:
    """The bad tokens derivable from `genuine`; `secret` signs the expired one (HS* only).

    `key_source` names where the secret would come from, for the reason given when it is
    missing.
    """
    header = header_of(genuine)
    algorithm = str(header.get("alg", ""))
    claims = _claims(genuine)
    encoded_header, encoded_payload, signature = genuine.split(".")
    flipped = _b64(bytes(b ^ 0xFF for b in _unb64(signature)) or b"\x00")
    tampered = _b64(json.dumps({**claims, "sub": NOBODY_SUB}).encode())
    result = BadTokens(
        tokens={
            "wrong-signature": f"{encoded_header}.{encoded_payload}.{flipped}",
            "tampered-claims": f"{encoded_header}.{tampered}.{signature}",
            "alg-none": jwt.encode(claims, None, algorithm="none"),
        }
    )
    if not algorithm.upper().startswith("HS"):
        result.unavailable["expired"] = (
            f"the app signs its tokens with {algorithm or 'no algorithm'}: an expired token "
            "needs its private key, and one signed any other way would be refused for its "
            "algorithm, not its expiry"
        )
    elif not secret:
        result.unavailable["expired"] = (
            f"an expired {algorithm} token must be signed with the app's secret, and the "
            f"target does not reveal it{f' ({key_source})' if key_source else ''}"
        )
    else:
        now = int(time.time())
        extra_header = {k: v for k, v in header.items() if k not in ("alg", "typ")}
        result.tokens["expired"] = jwt.encode(
            {**claims, "iat": now - 7200, "exp": now - 3600},
            secret,
            algorithm=algorithm,
            headers=extra_header or None,
        )
    return result
