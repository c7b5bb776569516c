"""What vaekit's process launchers share: the demo's and the multi-process tests'."""

from __future__ import annotations

import socket

__all__: list[str] = []


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing is bound to, for a process group to meet on.

    The port is free when this returns, not reserved: another process could take it before the
    group binds it, a race that a launcher on the loopback accepts.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
