"""Who is asking: bearer tokens (hashed at rest), roles, loopback, and the signed UI session.

Tokens come from ``MAMMO_API_TOKENS`` (``name:role:secret`` entries) and from the file named by
``MAMMO_API_TOKENS_FILE`` (one entry a line; ``name:role:sha256:<64 hex>`` keeps the secret out
of the file; ``#`` starts a comment). Only SHA-256 digests are kept in memory; a presented
token is hashed and compared with :func:`hmac.compare_digest` against every entry.

Roles: ``read`` (search, retrieve, see patient identifiers in the UI) and ``admin`` (also
STOW-RS). With ``loopback_without_token`` a request from 127.0.0.1 / ::1 acts as the admin
"loopback" (meant for a single-user machine; behind a reverse proxy on the same host every
request would come from loopback, so leave it off there).

The UI session is a cookie ``<payload>.<signature>``: the payload names the token (name, role,
a fingerprint of its digest, expiry), the signature is HMAC-SHA256 under a key derived from the
secret in ``<data_dir>/secret.key`` (created 0600 on first use). Revoking a token ends its
sessions, because the fingerprint must still match a configured token.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_node.config import Settings
from mammo_node.errors import ConfigError

logger = logging.getLogger(__name__)

SESSION_COOKIE = "mammo_session"
SESSION_SECONDS = 12 * 3600
_HEX = set("0123456789abcdef")


class Role(enum.StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``via`` is token, session or loopback."""

    name: str
    role: Role
    via: str
    fingerprint: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    digest: bytes  # sha256 of the secret

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"fingerprint" + self.digest).hexdigest()[:16]


def token_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def hash_entry(name: str, role: str, secret: str) -> str:
    """The ``name:role:sha256:<hex>`` line for a token file (what `mammo-node` docs suggest)."""
    return f"{name}:{Role(role).value}:sha256:{token_digest(secret).hex()}"


def parse_entry(entry: str, where: str) -> TokenEntry:
    """Parse ``name:role:secret`` or ``name:role:sha256:<hex>``; ``where`` names the source."""
    parts = entry.strip().split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ConfigError(
            f"API token entry in {where} should be name:role:secret or name:role:sha256:<hex>; "
            f"got an entry with {len(parts)} field(s) (name {parts[0]!r})."
        )
    name, role_text, secret = parts
    try:
        role = Role(role_text.strip().lower())
    except ValueError:
        raise ConfigError(
            f"API token {name!r} in {where} has role {role_text!r}; expected read or admin."
        ) from None
    if secret.startswith("sha256:"):
        hexdigest = secret[len("sha256:") :].strip().lower()
        if len(hexdigest) != 64 or not set(hexdigest) <= _HEX:
            raise ConfigError(
                f"API token {name!r} in {where}: sha256 digest should be 64 hex characters, "
                f"got {len(hexdigest)} characters."
            )
        return TokenEntry(name, role, bytes.fromhex(hexdigest))
    if len(secret) < 16:
        raise ConfigError(
            f"API token {name!r} in {where} is {len(secret)} characters long; use at least 16 "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    return TokenEntry(name, role, token_digest(secret))


def read_token_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read MAMMO_API_TOKENS_FILE {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class TokenStore:
    """The configured tokens, as digests."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = list(entries)
        names = [e.name for e in self.entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"API token names must be unique; repeated: {', '.join(duplicates)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        entries = [parse_entry(e, "MAMMO_API_TOKENS") for e in settings.api_tokens]
        if settings.api_tokens_file is not None:
            where = f"MAMMO_API_TOKENS_FILE ({settings.api_tokens_file})"
            entries += [parse_entry(e, where) for e in read_token_file(settings.api_tokens_file)]
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def verify(self, secret: str) -> TokenEntry | None:
        """The entry whose digest matches ``secret`` (every entry is compared)."""
        digest = token_digest(secret)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found

    def by_fingerprint(self, fingerprint: str) -> TokenEntry | None:
        for entry in self.entries:
            if hmac.compare_digest(entry.fingerprint, fingerprint):
                return entry
        return None


LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})
#: headers a proxy adds: a request that carries one did not start on this machine
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def is_loopback(host: str | None) -> bool:
    """Exactly 127.0.0.1 or ::1: not all of 127.0.0.0/8 (a sidecar proxy such as Istio's
    listens on 127.0.0.6 and forwards requests from anywhere)."""
    return bool(host) and host in LOOPBACK_ADDRESSES


def host_name(header: str) -> str:
    """The name of a Host header without its port (``[::1]:8080`` -> ``[::1]``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_local_request(client: str | None, headers: Any) -> bool:
    """A request made on this machine, straight to us: from 127.0.0.1 / ::1, with no
    forwarding header, addressed to a loopback name (a DNS-rebound page sends its own name)."""
    if not is_loopback(client):
        return False
    if any(name in headers for name in FORWARDING_HEADERS):
        return False
    return host_name(headers.get("host", "")) in LOOPBACK_NAMES


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# --- the UI session -----------------------------------------------------------------------------
def load_or_create_secret(data_dir: Path) -> bytes:
    """32 random bytes in ``<data_dir>/secret.key`` (mode 0600), created on first use."""
    path = data_dir / "secret.key"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read the node secret {path}: {exc}") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process created it first
    except OSError as exc:
        raise ConfigError(f"cannot create the node secret {path}: {exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(fresh)
        fh.flush()
        os.fsync(fh.fileno())
    return fresh


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, node_secret: bytes, *, lifetime: int = SESSION_SECONDS) -> None:
        self.key = hmac.new(node_secret, b"mammo-node ui session v1", hashlib.sha256).digest()
        self.lifetime = lifetime

    def issue(self, entry: TokenEntry, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.lifetime)
        payload = json.dumps(
            {"n": entry.name, "r": entry.role.value, "f": entry.fingerprint, "e": expires},
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(self.key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(signature)}"

    def verify(self, cookie: str, tokens: TokenStore, now: float | None = None) -> Principal | None:
        try:
            payload_text, signature_text = cookie.split(".", 1)
            payload = _unb64(payload_text)
            signature = _unb64(signature_text)
        except ValueError:
            return None
        expected = hmac.new(self.key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            data = json.loads(payload)
            expires = int(data["e"])
            fingerprint = str(data["f"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < (now or time.time()):
            return None
        entry = tokens.by_fingerprint(fingerprint)
        if entry is None or entry.name != data.get("n"):
            return None  # the token was revoked or renamed
        return Principal(entry.name, entry.role, "session", entry.fingerprint)
