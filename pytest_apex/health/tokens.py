"""Tokens a hardened service must refuse, made from a genuine one.

Wrong-signature, tampered-claims and `alg: none` tokens need no secret; an expired token
that is otherwise valid needs the signing secret, which only a target with container
access (or an explicit secret) can give.
"""

from __future__ import annotations

import base64
import json
import time

import jwt


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def bad_tokens(genuine: str, secret: str | None = None) -> dict[str, str]:
    """Name -> token that must be rejected."""
    claims = _claims(genuine)
    header, _payload, signature = genuine.split(".")
    tampered_payload = _b64(
        json.dumps({**claims, "sub": "00000000-0000-0000-0000-000000000000"}).encode()
    )
    tokens = {
        "wrong-signature": jwt.encode(claims, "not-the-signing-secret-0123456789", "HS256"),
        "tampered-claims": f"{header}.{tampered_payload}.{signature}",
        "alg-none": jwt.encode(claims, None, algorithm="none"),
    }
    if secret:
        now = int(time.time())
        tokens["expired"] = jwt.encode(
            {**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256"
        )
    return tokens
