"""Deadlines for slow clients (slowloris): uvicorn times out only idle keep-alive connections, so a
client that sends its headers one byte every few seconds, or starts a body and stalls, would hold
a connection (and its memory) forever.

This HTTP protocol closes a connection whose request line and headers are not complete within
`header_timeout_s` of its first byte (or of the connection), and one whose request body pauses for
longer than `body_timeout_s` between chunks. While the application works on a request or sends
its answer no deadline applies. A reverse proxy in front (README: Security) should still buffer
requests and limit connections per client; these deadlines hold without one.
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class SlowClientH11Protocol(H11Protocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_protocol() is not self:  # upgraded to a WebSocket: its own keep-alive pings apply
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # still reading a request line and headers: one deadline for all of them
            if self._deadline is None:
                self._arm(self.header_timeout_s)
        elif state is h11.SEND_BODY:  # each chunk of a body restarts the pause deadline
            self._arm(self.body_timeout_s)
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # uvicorn's keep-alive timeout covers the idle time; the next first byte arms again

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def slow_client_protocol(header_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these deadlines."""
    return type("ConfiguredSlowClientH11Protocol", (SlowClientH11Protocol,),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})
