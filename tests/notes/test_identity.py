"""identity: sign-up, sign-in, RS256 tokens verifiable with the published key; and the api
refusing every token identity did not sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import httpx
import pytest

from tests.notes.conftest import User
from tests.notes.markers import NOTES_STACK
from tests.notes.rs256 import b64url_decode, verified_claims

pytestmark = NOTES_STACK

TOKEN_TTL_S = 600  # compose.yml's default NOTES_TOKEN_TTL_SECONDS
AUDIENCE = "notes-api"
ISSUER = "http://identity:7000"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"


def test_sign_up_then_sign_in_gives_an_rs256_token_of_the_published_key(
    http: httpx.Client, identity: str, new_user
) -> None:
    user: User = new_user()
    session = http.post(
        f"{identity}/v1/sessions", json={"username": user.username, "password": user.password}
    )
    assert session.status_code == 201, session.text
    token, expires = session.json()["jwt"], session.json()["expires"]
    jwks = http.get(f"{identity}/v1/jwks").json()["keys"]
    kid = json.loads(b64url_decode(token.split(".")[0]))["kid"]
    (jwk,) = [k for k in jwks if k["kid"] == kid]
    claims = verified_claims(token, jwk)
    assert claims["sub"] == user.id
    assert claims["preferred_username"] == user.username
    assert (claims["aud"], claims["iss"]) == (AUDIENCE, ISSUER)
    assert claims["exp"] == expires
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_S
    assert abs(claims["iat"] - time.time()) < 60


def test_a_taken_username_is_refused(http: httpx.Client, identity: str, new_user) -> None:
    user: User = new_user()
    again = http.post(
        f"{identity}/v1/accounts", json={"username": user.username, "password": "another-one"}
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "username", ["ab", "Alice", "alice@example.test", "a" * 41, "with space", ""]
)
def test_usernames_outside_the_pattern_are_refused(
    http: httpx.Client, identity: str, username: str
) -> None:
    response = http.post(
        f"{identity}/v1/accounts", json={"username": username, "password": "long enough"}
    )
    assert response.status_code == 422, response.text


def test_a_short_password_is_refused(http: httpx.Client, identity: str) -> None:
    response = http.post(
        f"{identity}/v1/accounts",
        json={"username": f"short_{secrets.token_hex(4)}", "password": "seven77"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize("case", ["wrong password", "unknown user"])
def test_bad_credentials_get_401(http: httpx.Client, identity: str, new_user, case: str) -> None:
    user: User = new_user()
    username = user.username if case == "wrong password" else f"nobody_{secrets.token_hex(4)}"
    response = http.post(
        f"{identity}/v1/sessions", json={"username": username, "password": "not-the-password"}
    )
    assert response.status_code == 401
    assert "jwt" not in response.text


def test_the_api_needs_a_bearer_token(http: httpx.Client, api: str) -> None:
    response = http.get(f"{api}/v1/notebooks")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


def _forgeries(user: User, identity_jwks: list[dict]) -> dict[str, str]:
    header_b64, payload_b64, signature_b64 = user.token.split(".")
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(payload_b64))
    other = {**claims, "sub": "00000000-0000-4000-8000-000000000000"}
    # HS256 keyed with the public modulus: the classic RS/HS confusion.
    hs_input = _unsigned({**header, "alg": "HS256"}, claims)
    public_bytes = b64url_decode(identity_jwks[0]["n"])
    hs_signature = _b64url(hmac.new(public_bytes, hs_input.encode(), hashlib.sha256).digest())
    return {
        "garbage": "not.a.token",
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, claims) + ".",
        "other subject, same signature": f"{_unsigned(header, other)}.{signature_b64}",
        "hs256 with the public key": f"{hs_input}.{hs_signature}",
        "unknown key id": f"{_unsigned({**header, 'kid': 'nope'}, claims)}.{signature_b64}",
    }


def test_the_api_refuses_tokens_identity_did_not_sign(
    http: httpx.Client, api: str, identity: str, new_user
) -> None:
    user: User = new_user()
    assert http.get(f"{api}/v1/notebooks", headers=user.auth).status_code == 200
    jwks = http.get(f"{identity}/v1/jwks").json()["keys"]
    for name, forged in _forgeries(user, jwks).items():
        response = http.get(f"{api}/v1/notebooks", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, (name, response.text)
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name
