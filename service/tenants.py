"""API keys -> tenants. Keys are kept only as SHA-256 digests and compared in constant time against
every entry (no early exit); a key never appears in a log line or an error."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress

from lipsync_triton.errors import LipsyncError
from .settings import Settings

LOCAL_TENANT = "local"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Tenants:
    def __init__(self, settings: Settings):
        self.entries: list[tuple[str, str]] = []  # (digest, tenant)
        for item in filter(None, (part.strip() for part in settings.api_keys.split(","))):
            tenant, sep, key = item.partition(":")
            if not sep or not tenant or not key:
                raise LipsyncError("LIPSYNC_API_KEYS must be 'tenant:key,...'; an entry has no tenant or key")
            if len(key) < settings.min_key_length:  # the key itself is never shown
                raise LipsyncError(f"LIPSYNC_API_KEYS: the key of tenant {tenant!r} has {len(key)} characters; keys need at "
                                   f"least {settings.min_key_length} (LIPSYNC_MIN_KEY_LENGTH): make one with "
                                   "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
            self.entries.append((key_digest(key), tenant))
        if settings.api_keys_file:
            for number, line in enumerate(settings.api_keys_file.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                tenant, sep, digest = line.partition(":")
                if not sep or len(digest) != 64:
                    raise LipsyncError(f"{settings.api_keys_file}:{number}: expected 'tenant:<sha256 hex of the key>'")
                self.entries.append((digest.lower(), tenant))
        self.local_only = settings.local_only and not self.entries

    def check_startup(self, host: str, local_only: bool) -> None:
        """Refuse to serve without keys unless told it is local-only and bound to loopback."""
        if self.entries:
            return
        if not local_only:
            raise LipsyncError("no API keys configured: set LIPSYNC_API_KEYS='tenant:key' (or LIPSYNC_API_KEYS_FILE), "
                               "or LIPSYNC_LOCAL_ONLY=1 to serve one local tenant on a loopback address")
        if not is_loopback(host):
            raise LipsyncError(f"LIPSYNC_LOCAL_ONLY serves without keys and only on a loopback address, not {host}; "
                               "configure API keys to listen on the network")

    def tenant_for(self, key: str | None) -> str | None:
        if self.local_only:
            return LOCAL_TENANT
        if not key:
            return None
        digest = key_digest(key)
        found = None
        for stored, tenant in self.entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = tenant
        return found
