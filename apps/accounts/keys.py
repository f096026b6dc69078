"""API key format: generation, parsing and hashing (no database access here)."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "tsk"
_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"^tsk_([a-z0-9]{8})_([A-Za-z0-9]{40})$")


@dataclass(frozen=True)
class GeneratedKey:
    prefix: str
    secret: str

    @property
    def plaintext(self) -> str:
        return f"{KEY_PREFIX}_{self.prefix}_{self.secret}"


def key_generate() -> GeneratedKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    return GeneratedKey(prefix=prefix, secret=secret)


def key_parse(plaintext: str) -> tuple[str, str] | None:
    """Split a presented key into (prefix, secret), or None when it is not shaped like one of ours."""
    match = _KEY_RE.match(plaintext)
    return (match.group(1), match.group(2)) if match else None


def secret_hash(secret: str) -> str:
    # The secret carries 238 bits of randomness, so a fast hash is safe (no dictionary to attack)
    # and keeps authentication off the hot path's profile, unlike a password hasher.
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(secret), stored_hash)
