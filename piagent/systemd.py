"""systemd's notify protocol with the stdlib socket: READY, STOPPING and WATCHDOG datagrams to `$NOTIFY_SOCKET`.

The protocol (sd_notify(3)): one AF_UNIX datagram per state change, `KEY=VALUE` lines, to the path systemd
put in `NOTIFY_SOCKET`; a leading `@` names a socket in the abstract namespace (a NUL byte on the wire).
`WATCHDOG_USEC` asks for `WATCHDOG=1` at least that often; `WATCHDOG_PID`, when set, names the one process
it is meant for. Nothing here blocks or raises: with systemd gone, a state is simply not told.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

logger = logging.getLogger("piagent.server")


class Notifier:
    """A non-blocking datagram socket to systemd's notify socket; the owner closes it."""

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)  # a full queue on systemd's side must never stall the event loop

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Notifier | None:
        """A notifier for `NOTIFY_SOCKET`, or None when systemd did not ask for notifications."""
        address = environ.get("NOTIFY_SOCKET", "")
        if not address.startswith(("/", "@")) or len(address) < 2:
            if address:
                logger.warning("NOTIFY_SOCKET=%r is not a Unix socket path; systemd is not notified", address)
            return None
        return cls(address)

    def send(self, state: bytes) -> bool:
        """Tell systemd `state` (e.g. b"READY=1"); False if it could not be sent."""
        try:
            self._sock.sendto(state, self.address)
        except OSError as exc:
            logger.debug("Could not notify systemd of %r: %s", state, exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of `WATCHDOG_USEC`), or None when no watchdog is meant for `pid`."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2 / 1_000_000
