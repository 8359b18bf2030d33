"""Whether a server's port is free, checked before anything is printed or started.

    python -m pipeline.cli.port HOST PORT VARIABLE TARGET

exits 0 when a server could listen on HOST:PORT; else it writes one line (wrapped here) naming
a free port above PORT, other than the targets' defaults, and exits 1:

    $ python -m pipeline.cli.port 127.0.0.1 5000 UI_PORT ui
    error: port 5000 on 127.0.0.1 is in use (another server?): choose another with
    UI_PORT=5002 make ui

`make ui`, `make serve` and `make draw` run it first; it imports nothing beyond the standard
library unless the port is taken.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from pipeline.errors import ConfigError, PortInUseError

# The ports `make ui`, `make serve` and `make draw` take by default (Makefile): never offered
# in place of another one.
DEFAULT_PORTS = frozenset({5000, 5001, 8000})
SEARCH = 100  # ports tried above a busy one for a free one to offer


def check_free(host: str, port: int, choose: str) -> None:
    """Return if a server could listen on host:port; `choose` says how to pick another port,
    with `{port}` where a free one goes: "UI_PORT={port} make ui", "--port {port}".

    Raises:
        PortInUseError: something listens on host:port (or on all addresses at that port).
    """
    if not in_use(host, port):
        return
    other = free_above(host, port)
    how = choose.format(port=other if other is not None else "PORT")
    raise PortInUseError(
        f"port {port} on {host} is in use (another server?): choose another with {how}"
    )


def in_use(host: str, port: int) -> bool:
    """Whether binding host:port fails because the address is taken, for any of the addresses
    `host` stands for: what uvicorn would meet. Other failures (an address this machine does
    not have, no IPv6) are left for the server to report."""
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                _as_servers_do(sock, family)
                sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or getattr(exc, "winerror", None) == 10048:
                return True
    return False


def _as_servers_do(sock: socket.socket, family: int) -> None:
    """The options asyncio's servers (uvicorn's) set before binding: a port whose last server
    has just stopped (its connections waiting out TIME_WAIT) is free to them, one with a
    listening socket is not. (On Windows SO_REUSEADDR would let a second server share a port:
    there it is left off, as asyncio leaves it.)"""
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def free_above(host: str, port: int) -> int | None:
    """The first port above `port` that is free on `host`, leaving out the project's own
    defaults; None if none of the next SEARCH is."""
    for other in range(port + 1, min(port + SEARCH, 65535) + 1):
        if other not in DEFAULT_PORTS and not in_use(host, other):
            return other
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: python -m pipeline.cli.port HOST PORT VARIABLE TARGET\n")
        return 2
    host, port, variable, target = argv
    try:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{variable}={port} is not a port: give one of 1-65535")
        check_free(host, int(port), f"{variable}={{port}} make {target}")
    except (ConfigError, PortInUseError) as exc:
        from pipeline.cli.failure import fail

        return fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
