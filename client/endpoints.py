"""Which Triton endpoint gets the next request: round-robin over healthy endpoints, a failed one
benched with a bounded exponential back-off (then tried again, so a restarted server is used
again), and `dns://NAME:PORT` resolved to every address behind the name (a Kubernetes headless
Service: one address per pod) and re-resolved as pods come and go.

Health is shared by every pool in the process (a worker's jobs), so a dead server is not retried
by each new job; a success clears it at once."""
from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
DNS_REFRESH_S = 15.0
DNS_PREFIX = "dns://"


@dataclass
class _Health:
    failures: int = 0
    benched_until: float = 0.0


class HealthBoard:
    """Process-wide failure counts and back-off per endpoint URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: dict[str, _Health] = {}

    def failed(self, url: str) -> float:
        """Bench `url`; returns the back-off in seconds."""
        with self._lock:
            health = self._health.setdefault(url, _Health())
            health.failures += 1
            backoff = min(BACKOFF_START_S * 2 ** (health.failures - 1), BACKOFF_MAX_S)
            health.benched_until = time.monotonic() + backoff
            return backoff

    def ok(self, url: str) -> None:
        with self._lock:
            self._health.pop(url, None)

    def benched_until(self, url: str) -> float:
        with self._lock:
            health = self._health.get(url)
            return health.benched_until if health else 0.0


HEALTH = HealthBoard()


def resolve(target: str) -> list[str]:
    """`dns://name:port` -> ['10.0.0.5:port', ...] (every address, sorted); other URLs unchanged."""
    if not target.startswith(DNS_PREFIX):
        return [target]
    host, _, port = target[len(DNS_PREFIX):].strip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{target}: expected dns://NAME:PORT")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    addresses = sorted({info[4][0] for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


class Endpoints:
    """The endpoints of one pool: `pick()` the next, `failed(url)` / `ok(url)` after a request."""

    def __init__(self, targets: list[str], health: HealthBoard = HEALTH):
        self.targets = list(targets)
        self.health = health
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._urls: list[str] = []
        self._excluded: set[str] = set()  # this pool's own: servers without the models it needs
        self._resolved_at = -DNS_REFRESH_S
        self._refresh()

    def _refresh(self) -> None:
        urls: list[str] = []
        for target in self.targets:
            try:
                urls += [u for u in resolve(target) if u not in urls]
            except OSError:
                continue  # a name that does not resolve right now (no pod ready): keep the others
        with self._lock:
            if urls:
                self._urls = urls
            self._resolved_at = time.monotonic()

    @property
    def urls(self) -> list[str]:
        if any(t.startswith(DNS_PREFIX) for t in self.targets) and time.monotonic() - self._resolved_at > DNS_REFRESH_S:
            self._refresh()
        with self._lock:
            return [u for u in self._urls if u not in self._excluded]

    def exclude(self, url: str) -> None:
        with self._lock:
            self._excluded.add(url)

    def excluded_all(self) -> bool:
        """Every known endpoint was excluded (none serves what this pool needs)."""
        with self._lock:
            return bool(self._urls) and set(self._urls) <= self._excluded

    def pick(self) -> tuple[str, float]:
        """(url, seconds until it is off the bench: 0 for a healthy one). The next healthy endpoint in
        turn; when all are benched, the one that comes back first."""
        urls = self.urls
        if not urls:
            raise OSError(f"no address for {', '.join(self.targets)}")
        start = next(self._counter)
        now = time.monotonic()
        for i in range(len(urls)):
            url = urls[(start + i) % len(urls)]
            if self.health.benched_until(url) <= now:
                return url, 0.0
        soonest = min(urls, key=self.health.benched_until)
        return soonest, max(0.0, self.health.benched_until(soonest) - now)

    def failed(self, url: str) -> float:
        return self.health.failed(url)

    def ok(self, url: str) -> None:
        self.health.ok(url)
