"""OAuth2 token introspection (RFC 7662) for opaque tokens, with a cache."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote, urlencode

from bastion.auth.cache import ExpiringCache
from bastion.auth.errors import AuthError
from bastion.net.fetch import FetchError, fetch


class Introspector:
    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        cache_seconds: float = 60,
        timeout: float = 3.0,
        cache_entries: int = 10_000,
    ) -> None:
        self.url = url
        basic = base64.b64encode(f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode())
        self.auth = b"Basic " + basic
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.cache = ExpiringCache(cache_entries)
        self.calls = 0

    async def introspect(self, token: str) -> dict:
        digest = hashlib.blake2b(token.encode("latin-1", "replace"), digest_size=16).digest()
        hit = self.cache.get(digest)
        if hit is not None:
            result = hit
        else:
            self.calls += 1
            body = urlencode({"token": token, "token_type_hint": "access_token"}).encode()
            try:
                status, data = await fetch(
                    self.url,
                    method="POST",
                    body=body,
                    timeout=self.timeout,
                    headers=[(b"authorization", self.auth), (b"content-type", b"application/x-www-form-urlencoded")],
                )
                if status != 200:
                    raise FetchError(f"status {status}")
                result = json.loads(data)
                if not isinstance(result, dict):
                    raise ValueError("not an object")
            except (FetchError, ValueError) as exc:
                raise AuthError(f"token introspection unavailable ({type(exc).__name__})") from None
            now = time.time()
            until = now + self.cache_seconds
            exp = result.get("exp")
            if isinstance(exp, (int, float)):
                until = min(until, float(exp))
            self.cache.put(digest, result, until)
        if result.get("active") is not True:
            raise AuthError("token is not active")
        exp = result.get("exp")
        if isinstance(exp, (int, float)) and exp <= time.time():
            raise AuthError("token expired")
        return result
