"""Negative checks judged beside their positive controls, and the bad tokens they probe with.

No stack needed: fakes stand in for the app's socket. These pin the rule that a refusal
only counts where the genuine request got in on the same route, that nothing probed is
inconclusive rather than a pass, and that each bad token differs from the genuine one in
one way only (the expired one is never signed with an algorithm the app does not use).
"""

from __future__ import annotations

import ast
import base64
import json
import time
from pathlib import Path

import jwt
import pytest
import websockets
from websockets.frames import Close
from websockets.http11 import Response

from pytest_apex.criteria import Criterion
from pytest_apex.health import auth_probe, controls, tokens
from pytest_apex.recording import Check

SECRET = "a-test-secret-long-enough-for-hs256-0123456789"
CLAIMS = {"sub": "4b0c5c38-6f35-4d7e-9a68-6e3f6f0b7a11", "email": "a@apex.test", "type": "access"}


def _outcome(check: Check) -> str:
    criterion = Criterion(
        "health",
        check.name,
        check.observed,
        check.threshold,
        check.op,
        inconclusive=check.inconclusive,
    )
    return criterion.outcome


def _controlled(control_ok: bool, refused: bool, let_in: bool = False) -> controls.Controlled:
    return controls.Controlled("ws subprotocol", control_ok, "control", refused, let_in, "probe")


# --- every / refusals ---------------------------------------------------------------------


def test_every_is_inconclusive_on_nothing_not_a_pass() -> None:
    check = controls.every("jwt_genuine.ws_accepted", [], nothing="no backend endpoint")
    assert _outcome(check) == "inconclusive"
    assert check.inconclusive == "no backend endpoint"
    assert _outcome(controls.every("x", [controls.Outcome(True, "ok")], nothing="-")) == "pass"
    assert _outcome(controls.every("x", [controls.Outcome(False, "404")], nothing="-")) == "fail"


def test_refusals_of_nothing_are_inconclusive() -> None:
    assert _outcome(controls.refusals("jwt_x.ws_rejected", [], nothing="no socket")) == (
        "inconclusive"
    )


def test_a_refusal_where_the_control_also_failed_proves_nothing() -> None:
    # An unknown WebSocket path answers 403 to every token, the genuine one included.
    check = controls.refusals("jwt_x.ws_rejected", [_controlled(False, True)], nothing="-")
    assert _outcome(check) == "inconclusive"
    assert "the control did not get in" in check.detail


def test_a_refusal_beside_a_working_control_passes() -> None:
    check = controls.refusals("jwt_x.ws_rejected", [_controlled(True, True)], nothing="-")
    assert _outcome(check) == "pass"


def test_a_breach_fails_whatever_the_controls_did() -> None:
    probes = [_controlled(False, True), _controlled(True, False, let_in=True)]
    assert _outcome(controls.refusals("jwt_x.ws_rejected", probes, nothing="-")) == "fail"


def test_no_refusal_on_a_controlled_route_fails() -> None:
    # The genuine token gets in; the forged one gets a 500: that is no refusal.
    assert _outcome(controls.refusals("x", [_controlled(True, False)], nothing="-")) == "fail"


# --- the WebSocket through the adapter ----------------------------------------------------


class FakeSockets:
    """An adapter's RawTokenSocket: `refuse` decides how a token's exchange ends."""

    socket_token_transports = ("subprotocol", "header")

    def __init__(self, refuse: dict[str, BaseException]) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str]] = []

    async def exchange_over_socket(self, token: str, transport: str, timeout_s: float) -> None:
        self.seen.append((token, transport))
        if token in self.refuse:
            raise self.refuse[token]


def _forbidden() -> websockets.InvalidStatus:
    return websockets.InvalidStatus(Response(403, "Forbidden", websockets.Headers()))


def _policy_close() -> websockets.ConnectionClosed:
    return websockets.ConnectionClosedError(Close(1008, "invalid token"), None)


async def test_an_unknown_socket_path_answering_403_is_not_a_rejected_forged_token() -> None:
    sockets = FakeSockets({"genuine": _forbidden(), "forged": _forbidden()})
    control = await auth_probe.ws_answer(sockets, "genuine", "subprotocol")
    probe = await auth_probe.ws_answer(sockets, "forged", "subprotocol")
    assert probe.rejected  # on its own it would read as a refusal
    check = controls.refusals(
        "jwt_alg-none.ws_rejected", [auth_probe.controlled(control, probe, "ws")], nothing="-"
    )
    assert _outcome(check) == "inconclusive"
    assert sockets.seen == [("genuine", "subprotocol"), ("forged", "subprotocol")]


async def test_a_socket_closed_with_1008_after_the_genuine_token_got_in_is_a_refusal() -> None:
    sockets = FakeSockets({"forged": _policy_close()})
    control = await auth_probe.ws_answer(sockets, "genuine", "header")
    probe = await auth_probe.ws_answer(sockets, "forged", "header")
    assert control.accepted
    assert probe.close_code == 1008
    check = controls.refusals("x", [auth_probe.controlled(control, probe, "ws")], nothing="-")
    assert _outcome(check) == "pass"


def test_the_health_engine_reaches_the_socket_only_through_the_adapter_protocol() -> None:
    health = Path(auth_probe.__file__).parent
    imported = {
        node.module
        for path in health.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "pytest_apex.adapters.apex" not in imported


# --- bad tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _rs256_token() -> str:
    """An RS256 token as an app signs it (the signature is opaque here: nothing verifies it)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "key-1"}
    claims = {**CLAIMS, "iat": int(time.time()), "exp": int(time.time()) + 900}
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"s" * 256)]
    )


def test_an_rs256_app_gets_no_expired_token_signed_with_another_algorithm() -> None:
    made = tokens.bad_tokens(_rs256_token(), SECRET, "JWT_SECRET of auth")
    assert "expired" not in made.tokens
    assert "RS256" in made.unavailable["expired"]
    assert "private key" in made.unavailable["expired"]


def test_an_rs256_apps_forged_tokens_keep_its_header() -> None:
    genuine = _rs256_token()
    made = tokens.bad_tokens(genuine, SECRET)
    for kind in ("wrong-signature", "tampered-claims"):
        assert tokens.header_of(made.tokens[kind]) == tokens.header_of(genuine), kind
    assert made.tokens["wrong-signature"].rsplit(".", 1)[0] == genuine.rsplit(".", 1)[0]
    assert made.tokens["wrong-signature"] != genuine
    assert tokens.header_of(made.tokens["alg-none"])["alg"] == "none"


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_an_hs_apps_expired_token_is_signed_with_its_own_algorithm(algorithm: str) -> None:
    now = int(time.time())
    genuine = jwt.encode({**CLAIMS, "iat": now, "exp": now + 900}, SECRET * 2, algorithm)
    expired = tokens.bad_tokens(genuine, SECRET * 2).tokens["expired"]
    assert tokens.header_of(expired)["alg"] == algorithm
    with pytest.raises(jwt.ExpiredSignatureError):  # the expiry is its only fault
        jwt.decode(expired, SECRET * 2, algorithms=[algorithm])
    claims = jwt.decode(expired, SECRET * 2, algorithms=[algorithm], options={"verify_exp": False})
    assert claims["sub"] == CLAIMS["sub"]


def test_without_the_secret_the_expired_token_says_where_it_looked() -> None:
    now = int(time.time())
    genuine = jwt.encode({**CLAIMS, "iat": now, "exp": now + 900}, SECRET, "HS256")
    made = tokens.bad_tokens(genuine, None, "JWT_SECRET of auth")
    assert "JWT_SECRET of auth" in made.unavailable["expired"]


def test_a_genuine_hs256_token_with_a_flipped_signature_is_refused_by_its_key() -> None:
    now = int(time.time())
    genuine = jwt.encode({**CLAIMS, "iat": now, "exp": now + 900}, SECRET, "HS256")
    forged = tokens.bad_tokens(genuine).tokens["wrong-signature"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, SECRET, algorithms=["HS256"])


def test_the_signing_key_source_reads_one_variable_of_one_service() -> None:
    source = tokens.SigningKeySource("auth", "JWT_SECRET")
    assert source.find({"JWT_SECRET": SECRET}) == SECRET
    assert source.find({"JWT_SECRET": ""}) is None
    assert source.find({}) is None
