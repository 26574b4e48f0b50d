"""``DevIssuer``: a local OpenID Connect issuer for development and tests.

It serves a discovery document and a JWKS over real HTTP on a loopback port (a stdlib
``ThreadingHTTPServer`` in a daemon thread, so it works from sync code, from any event
loop and from the CLI), signs tokens with its own keys, and makes the bad tokens a
verifier must refuse. ``wis2l dev`` and ``Wis2l.embedded()`` run one; the pytest plugin's
``oidc_issuer`` fixture hands one to a test.

Stable (other modules and apps rely on it): ``DevIssuer(audience=, state_dir=, port=)``,
``start()``/``stop()``/context manager, ``issuer``, ``audience``, ``jwks_uri``,
``environ()``, ``mint(...)``, the bad-token helpers (``expired``, ``not_yet_valid``,
``wrong_audience``, ``wrong_issuer``, ``foreign_key``, ``alg_none``,
``hs256_with_public_key``, ``tampered``, ``oversized``, ``unknown_crit``), ``rotate()``,
``withdraw(kid)``, the counters ``jwks_fetches`` / ``discovery_fetches`` and the knobs
``max_age``, ``delay`` and ``failing``. ``DevIssuer.from_state(dir)`` mints with the keys a
running issuer persisted there (``wis2l dev token``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeyParameters, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

__all__ = ["DEFAULT_AUDIENCE", "ROLE_CLAIM", "DevIssuer"]

DEFAULT_AUDIENCE = "wis2l-dev"
"""The audience the dev issuer puts in its tokens unless told otherwise."""
ROLE_CLAIM = "wis2l_role"
"""The claim ``mint(role=...)`` sets; point ``WIS2L_OIDC_ROLE_CLAIM`` at it to use it."""
STATE_FILE = "oidc-issuer.json"
"""The file in ``state_dir`` with the issuer URL, audience and private keys."""

_FAMILY = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}

AnyKey = RSAKey | ECKey | OKPKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _new_key(alg: str) -> AnyKey:
    params: KeyParameters = {"kid": secrets.token_hex(8), "alg": alg, "use": "sig"}
    family = _FAMILY.get(alg)
    if family == "RSA":
        return RSAKey.generate_key(2048, parameters=params, private=True)
    if family == "EC":
        return ECKey.generate_key("P-256", parameters=params, private=True)
    if family == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=params, private=True)
    raise ValueError(f"the dev issuer signs with RS256, PS256, ES256 or EdDSA, not {alg!r}")


class DevIssuer:
    """A local OpenID Connect issuer on ``127.0.0.1`` with its own signing keys.

    Args:
        audience: the ``aud`` of minted tokens (``WIS2L_OIDC_AUDIENCE`` for the app).
        state_dir: when given, the issuer URL, audience and private keys are kept in
            ``state_dir/oidc-issuer.json`` so that ``wis2l dev token`` (another process)
            mints tokens the running issuer's JWKS verifies, and a restart keeps its keys
            and port.
        port: the port to listen on; 0 picks a free one (or the persisted one).
        algorithms: a key is made for each (``RS256``, ``PS256``, ``ES256``, ``EdDSA``).

    Attributes:
        max_age: the ``Cache-Control: max-age`` of the JWKS (``None``: no header).
        delay: seconds each answer waits before it is sent (to test timeouts and
            single-flight fetches).
        failing: an HTTP status every request gets instead of its document (``None``:
            serve normally), e.g. ``503``; ``302`` redirects the JWKS elsewhere.
        jwks_fetches: how many times the JWKS was asked for.
        discovery_fetches: how many times the discovery document was asked for.
    """

    def __init__(
        self,
        *,
        audience: str = DEFAULT_AUDIENCE,
        state_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        algorithms: tuple[str, ...] = ("RS256", "ES256"),
    ) -> None:
        self.audience = audience
        self.max_age: int | None = 300
        self.delay = 0.0
        self.failing: int | None = None
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._state = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self._keys: list[AnyKey] = []
        self._port = port
        self._issuer: str | None = None
        if self._state is not None and self._state.exists():
            self._load(self._state)
        if not self._keys:
            self._keys = [_new_key(a) for a in algorithms]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def from_state(cls, state_dir: str | os.PathLike[str]) -> DevIssuer:
        """A minting-only issuer from the keys a running one persisted in ``state_dir``.

        Raises:
            FileNotFoundError: no dev issuer has run with this ``state_dir``.
        """
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no dev issuer state in {path}: is `wis2l dev` running?")
        return cls(state_dir=state_dir)

    def start(self) -> DevIssuer:
        """Listen on ``127.0.0.1`` and serve discovery and the JWKS (idempotent)."""
        if self._server is not None:
            return self
        try:
            server = _Server(("127.0.0.1", self._port), _handler(self))
        except OSError:
            if not self._port:
                raise
            server = _Server(("127.0.0.1", 0), _handler(self))
        self._server = server
        self._port = server.server_address[1]
        self._issuer = f"http://127.0.0.1:{self._port}"
        self._thread = threading.Thread(
            target=server.serve_forever, name="wis2l-dev-issuer", daemon=True
        )
        self._thread.start()
        self._save()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); the keys and the URL stay, ``start()`` serves again."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DevIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def serving(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    @property
    def issuer(self) -> str:
        """The issuer URL, ``http://127.0.0.1:<port>`` (known once started)."""
        if self._issuer is None:
            raise RuntimeError("the dev issuer has no URL until start()")
        return self._issuer

    @property
    def jwks_uri(self) -> str:
        """Where the JWKS is served."""
        return f"{self.issuer}/jwks"

    def environ(self) -> dict[str, str]:
        """The settings that point an app at this issuer."""
        return {"WIS2L_OIDC_ISSUER": self.issuer, "WIS2L_OIDC_AUDIENCE": self.audience}

    # -- keys ------------------------------------------------------------------------

    @property
    def kids(self) -> list[str]:
        """The ``kid`` of every key in the JWKS, oldest first."""
        return [str(k.kid) for k in self._keys]

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS document served at ``jwks_uri`` (public halves only)."""
        with self._lock:
            return {"keys": [dict(k.as_dict(private=False)) for k in self._keys]}

    def rotate(self, alg: str = "RS256") -> str:
        """Add a new key for ``alg``; tokens minted from now on use it. Older keys stay in
        the JWKS (old tokens keep verifying) until :meth:`withdraw`.

        Returns:
            The new key's ``kid``.
        """
        key = _new_key(alg)
        with self._lock:
            self._keys.append(key)
        self._save()
        return str(key.kid)

    def withdraw(self, kid: str) -> None:
        """Remove a key from the JWKS; tokens it signed stop verifying once verifiers
        refresh their key set."""
        with self._lock:
            kept = [k for k in self._keys if k.kid != kid]
            if len(kept) == len(self._keys):
                raise KeyError(kid)
            self._keys = kept
        self._save()

    def _signing_key(self, alg: str) -> AnyKey:
        family = _FAMILY.get(alg)
        with self._lock:
            for key in reversed(self._keys):
                if key.key_type == family and key.get("alg") in (None, alg):
                    return key
        return _new_key(alg) if family is None else self._add(alg)

    def _add(self, alg: str) -> AnyKey:
        key = _new_key(alg)
        with self._lock:
            self._keys.append(key)
        self._save()
        return key

    # -- tokens ----------------------------------------------------------------------

    def claims(
        self,
        *,
        sub: str,
        email: str | None = None,
        name: str | None = None,
        role: str | None = None,
        ttl: float = 300,
        audience: str | list[str] | None = None,
        issuer: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims :meth:`mint` signs (same arguments)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer if issuer is not None else self.issuer,
            "sub": sub,
            "aud": audience if audience is not None else self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
        }
        if email is not None:
            claims["email"] = email
            claims["email_verified"] = True  # as nocturnaID says of the addresses it checked
        if name is not None:
            claims["name"] = name
        if role is not None:
            claims[ROLE_CLAIM] = role
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        *,
        sub: str,
        email: str | None = None,
        name: str | None = None,
        role: str | None = None,
        ttl: float = 300,
        audience: str | list[str] | None = None,
        issuer: str | None = None,
        alg: str = "RS256",
        kid: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed JWT for ``sub``.

        Args:
            sub: the subject.
            email: the ``email`` claim, with ``email_verified: true`` (pass
                ``email_verified=False`` to say otherwise).
            name: the ``name`` claim.
            role: sets the :data:`ROLE_CLAIM` claim.
            ttl: seconds until ``exp`` (negative: already expired).
            audience: the ``aud`` (default: this issuer's audience).
            issuer: the ``iss`` (default: this issuer's URL).
            alg: ``RS256``, ``PS256``, ``ES256`` or ``EdDSA``.
            kid: sign with this key of the JWKS (default: the newest for ``alg``).
            header: extra header parameters.
            **claims: more claims; a claim given ``None`` is left out (``iat=None``).
        """
        body = self.claims(
            sub=sub,
            email=email,
            name=name,
            role=role,
            ttl=ttl,
            audience=audience,
            issuer=issuer,
            **claims,
        )
        key = self._by_kid(kid) if kid is not None else self._signing_key(alg)
        return self.sign(body, key, alg=alg, header=header)

    @staticmethod
    def sign(
        claims: dict[str, Any], key: AnyKey, *, alg: str, header: dict[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` with ``key`` (its ``kid`` goes in the header)."""
        head: dict[str, Any] = {"alg": alg, "kid": key.kid, **(header or {})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # RFC 9864 renames EdDSA
            return jwt.encode(head, claims, key, algorithms=[alg])

    def _by_kid(self, kid: str) -> AnyKey:
        with self._lock:
            for key in self._keys:
                if key.kid == kid:
                    return key
        raise KeyError(kid)

    # bad tokens ----------------------------------------------------------------------

    def expired(self, sub: str = "expired-user", **kw: Any) -> str:
        """A token whose ``exp`` passed an hour ago."""
        return self.mint(sub=sub, ttl=-3600, iat=int(time.time()) - 7200, nbf=None, **kw)

    def not_yet_valid(self, sub: str = "early-user", **kw: Any) -> str:
        """A token whose ``nbf`` is an hour ahead."""
        return self.mint(sub=sub, ttl=7200, nbf=int(time.time()) + 3600, **kw)

    def wrong_audience(self, sub: str = "user", **kw: Any) -> str:
        """A token for another audience."""
        return self.mint(sub=sub, audience="someone-else", **kw)

    def wrong_issuer(self, sub: str = "user", **kw: Any) -> str:
        """A token claiming another issuer, signed by this one's key."""
        return self.mint(sub=sub, issuer="https://evil.example", **kw)

    def foreign_key(self, sub: str = "user", *, same_kid: bool = True, **kw: Any) -> str:
        """A token signed by a key not in the JWKS (with a served key's ``kid`` unless
        ``same_kid=False``, then a random one)."""
        alg = kw.pop("alg", "RS256")
        key = _new_key(alg)
        if same_kid:
            data: Any = key.as_dict(private=True) | {"kid": self._signing_key(alg).kid}
            key = type(key).import_key(data)
        return self.sign(self.claims(sub=sub, **kw), key, alg=alg)

    def random_kid(self, sub: str = "user", **kw: Any) -> str:
        """A well-signed-looking token naming a ``kid`` nobody serves (the signature is
        the real key's, so only the ``kid`` is wrong)."""
        alg = kw.pop("alg", "RS256")
        key = self._signing_key(alg)
        head = {"alg": alg, "kid": secrets.token_hex(8)}
        return jwt.encode(head, self.claims(sub=sub, **kw), key, algorithms=[alg])

    def alg_none(self, sub: str = "user", **kw: Any) -> str:
        """An unsigned token (``alg: none``)."""
        return (
            f"{_json_b64({'alg': 'none', 'typ': 'JWT'})}.{_json_b64(self.claims(sub=sub, **kw))}."
        )

    def hs256_with_public_key(self, sub: str = "user", **kw: Any) -> str:
        """The classic key-confusion attack: HS256 keyed with the RSA public key's PEM."""
        key = self._signing_key("RS256")
        pem = key.as_pem(private=False)
        head = _json_b64({"alg": "HS256", "typ": "JWT", "kid": key.kid})
        signing_input = f"{head}.{_json_b64(self.claims(sub=sub, **kw))}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def tampered(self, sub: str = "user", **kw: Any) -> str:
        """A valid token whose payload was changed after signing (``sub`` -> admin)."""
        head, _, sig = self.mint(sub=sub, **kw).split(".")
        forged = self.claims(sub="admin", **{k: v for k, v in kw.items() if k != "alg"})
        return f"{head}.{_json_b64(forged)}.{sig}"

    def oversized(self, sub: str = "user", size: int = 17 * 1024, **kw: Any) -> str:
        """A validly signed token larger than ``size`` bytes."""
        return self.mint(sub=sub, padding="x" * size, **kw)

    def unknown_crit(self, sub: str = "user", **kw: Any) -> str:
        """A token whose header marks an extension nobody understands as critical."""
        alg = kw.pop("alg", "RS256")
        key = self._signing_key(alg)
        head = {"alg": alg, "kid": key.kid, "crit": ["x-wis2l-unknown"], "x-wis2l-unknown": 1}
        signing_input = f"{_json_b64(head)}.{_json_b64(self.claims(sub=sub, **kw))}"
        # joserfc refuses to sign an unknown crit, so the algorithm signs the raw input
        sig = JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
        return f"{signing_input}.{_b64(sig)}"

    # -- state -----------------------------------------------------------------------

    def _save(self) -> None:
        if self._state is None or self._issuer is None:
            return
        with self._lock:
            keys = KeySet(list(self._keys)).as_dict(private=True)
        data = {"issuer": self._issuer, "audience": self.audience, "keys": keys}
        self._state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._state.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self._state)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.audience = data.get("audience", self.audience)
        self._issuer = data.get("issuer")
        if self._issuer and not self._port:
            with contextlib.suppress(ValueError):
                self._port = int(self._issuer.rsplit(":", 1)[1])
        self._keys = list(KeySet.import_key_set(data["keys"]).keys)  # type: ignore[arg-type]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up (a verifier's timeout) is not news
        super().handle_error(request, client_address)


def _handler(issuer: DevIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "wis2l-dev-issuer"

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                with issuer._lock:
                    issuer.discovery_fetches += 1
                body: dict[str, Any] = {
                    "issuer": issuer.issuer,
                    "jwks_uri": issuer.jwks_uri,
                    "id_token_signing_alg_values_supported": sorted(_FAMILY),
                    "subject_types_supported": ["public"],
                    "response_types_supported": ["code"],
                }
            elif self.path == "/jwks":
                with issuer._lock:
                    issuer.jwks_fetches += 1
                body = issuer.public_jwks()
            else:
                self._send(404, {"error": "not found"})
                return
            if issuer.delay:
                time.sleep(issuer.delay)
            failing = issuer.failing
            if failing is not None:
                self._send(failing, {"error": "failing on purpose"})
                return
            self._send(200, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status in (301, 302, 307, 308):
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            if status == 200 and self.path == "/jwks" and issuer.max_age is not None:
                self.send_header("Cache-Control", f"public, max-age={issuer.max_age}")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
