"""SMART Backend Services auth: ``client_credentials`` with a signed JWT client assertion.

The EHR knows scribe by a client id and the public half of a key pair; scribe proves itself by
signing a short-lived JWT (RS384 or ES384, PyJWT) and trades it at the token endpoint for an
access token. The token is cached and refreshed shortly before it expires (and once after a
401, which is how a server says it revoked or expired it early).

See https://hl7.org/fhir/smart-app-launch/backend-services.html.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from scribe.fhir.outcome import describe_http_error

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class SmartAuthError(Exception):
    """The token endpoint refused us, or the key cannot be used (message says what to fix)."""


def load_private_key(path: Path, alg: str) -> Any:
    """Load a PEM private key and check it fits ``alg`` (RSA for RS384, EC P-384 for ES384)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(Path(path).expanduser().read_bytes(), password=None)
    except FileNotFoundError:
        raise SmartAuthError(f"SMART key file {path} does not exist (fhir.smart_key_file)") from None
    except (ValueError, TypeError) as exc:
        raise SmartAuthError(f"SMART key file {path} is not an unencrypted PEM private key: {exc}") from None
    if alg.startswith("RS") and not isinstance(key, rsa.RSAPrivateKey):
        raise SmartAuthError(f"fhir.smart_alg is {alg} but {path} is not an RSA key")
    if alg.startswith("ES") and not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SmartAuthError(f"fhir.smart_alg is {alg} but {path} is not an EC key")
    return key


def client_assertion(
    *, client_id: str, token_url: str, key: Any, alg: str, kid: str | None, now: float, lifetime_s: int = 240
) -> str:
    """The signed JWT: iss = sub = client id, aud = token URL, exp ≤ 5 minutes, unique jti."""
    import jwt

    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int(now) + lifetime_s,
        "iat": int(now),
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


@dataclass
class _Token:
    value: str
    expires_at: float


class SmartBackendAuth:
    """Caches one access token; ``await token(session)`` returns a valid one.

    ``clock`` is injectable (tests move time forward instead of sleeping). Refresh happens when
    less than ``refresh_margin`` of the token's lifetime is left (10 %, at most 60 s).
    """

    def __init__(
        self,
        *,
        client_id: str,
        key: Any,
        alg: str = "ES384",
        kid: str | None = None,
        scope: str = "system/DocumentReference.cru",
        token_url: str | None = None,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alg not in ("RS384", "ES384"):
            raise SmartAuthError(f"SMART Backend Services needs RS384 or ES384, not {alg}")
        self.client_id = client_id
        self.key = key
        self.alg = alg
        self.kid = kid
        self.scope = scope
        self.token_url = token_url
        self.base_url = base_url
        self.clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    def invalidate(self, value: str | None = None) -> None:
        """Forget the cached token (after a 401) so the next call fetches a new one."""
        if self._token is not None and (value is None or self._token.value == value):
            self._token = None

    def _fresh(self) -> bool:
        t = self._token
        if t is None:
            return False
        return self.clock() < t.expires_at

    async def token(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout | None = None) -> str:
        async with self._lock:
            if not self._fresh():
                self._token = await self._fetch(session, timeout)
            assert self._token is not None
            return self._token.value

    async def _discover(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout | None) -> str:
        if self.token_url:
            return self.token_url
        if not self.base_url:
            raise SmartAuthError("set fhir.smart_token_url (or fhir.base_url for discovery)")
        url = self.base_url.rstrip("/") + "/.well-known/smart-configuration"
        try:
            async with session.get(url, timeout=timeout, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise SmartAuthError(
                        f"SMART discovery at {url} answered HTTP {resp.status}; set fhir.smart_token_url"
                    )
                conf = await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"SMART discovery at {url} failed: {exc}") from exc
        endpoint = conf.get("token_endpoint") if isinstance(conf, dict) else None
        if not endpoint:
            raise SmartAuthError(f"{url} names no token_endpoint; set fhir.smart_token_url")
        self.token_url = str(endpoint)
        return self.token_url

    async def _fetch(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout | None) -> _Token:
        token_url = await self._discover(session, timeout)
        now = self.clock()  # for the cache; the assertion's exp is wall-clock time (the server checks it)
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(
                client_id=self.client_id, token_url=token_url, key=self.key, alg=self.alg, kid=self.kid,
                now=time.time(),
            ),
        }
        try:
            async with session.post(token_url, data=form, timeout=timeout, headers={"Accept": "application/json"}) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                status = resp.status
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"SMART token endpoint {token_url} unreachable: {exc}") from exc
        if status in (429,) or status >= 500:
            # transient: let the caller's retry policy handle it
            raise ConnectionError(describe_http_error(status, body, action="SMART token request"))
        if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            detail = describe_http_error(status, body, action="SMART token request")
            raise SmartAuthError(
                f"{detail}. Check fhir.smart_client_id ({self.client_id!r}), that the EHR has the public key "
                f"of fhir.smart_key_file registered (alg {self.alg}), and fhir.smart_scope"
            )
        expires_in = float(body.get("expires_in") or 300)
        margin = min(60.0, expires_in * 0.1)
        self.tokens_fetched += 1
        log.info("fhir smart token fetched (expires_in=%ss)", int(expires_in))
        return _Token(str(body["access_token"]), now + expires_in - margin)
