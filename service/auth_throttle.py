"""Failed authentication counted per client address (the `limits` library's moving window, in this
process's memory): past `LIPSYNC_AUTH_FAILURES_PER_MINUTE` failures in a minute, every attempt from
that address gets 429 with Retry-After until the window has room again, right key or not, so keys
cannot be guessed at full speed. Behind a proxy every client shares its address: the proxy should
then rate-limit too (see the README's security table)."""
from __future__ import annotations

import math
import time

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException

MESSAGE = "too many failed sign-ins or API keys from your address: wait {seconds} s, then use a valid key"


class AuthThrottle:
    def __init__(self, failures_per_minute: int):
        self.limit = limits.RateLimitItemPerMinute(max(1, failures_per_minute)) if failures_per_minute > 0 else None
        self.window = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may now."""
        if self.limit is None or self.window.test(self.limit, client):
            return None
        reset = self.window.get_window_stats(self.limit, client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, client: str) -> None:
        if self.limit is not None:
            self.window.hit(self.limit, client)

    def check(self, client: str) -> None:
        """HTTPException 429 (with Retry-After) while `client` is over its failures."""
        wait = self.retry_after(client)
        if wait is not None:
            raise HTTPException(429, MESSAGE.format(seconds=wait), headers={"Retry-After": str(wait)})
