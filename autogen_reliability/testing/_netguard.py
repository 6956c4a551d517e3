"""The socket-level guard behind ``--block-llm-network``: only loopback (and hosts allowed by name) may be reached.

Why at the socket:
    Every Python HTTP client ends in the ``socket`` module: the openai SDK
    (httpx2 over httpcore2: ``socket.create_connection`` when sync, anyio over
    asyncio's ``loop.getaddrinfo`` / ``sock_connect`` when async), legacy httpx
    (the anthropic SDK's 0.x releases, which AutoGen 0.7.5's client runs on),
    requests/urllib3 and aiohttp. So the guard replaces
    ``socket.getaddrinfo`` (a name is refused *before* it is looked up: the
    test fails at once, with the name in the message, and no DNS query leaves
    the machine) and ``socket.socket.connect`` / ``connect_ex`` (an address
    given as an IP, or a name handed to ``connect`` directly, is checked there).
    What it cannot see: a resolver of its own (aiodns / c-ares, used by aiohttp
    when installed: its connect is still caught, by IP), an event loop written
    in C (uvloop), and subprocesses.

Why the block is a test failure, not an ``OSError``:
    The SDKs retry every ``Exception`` raised under their transport (openai's
    ``_base_client`` catches ``Exception``, sleeps, retries twice and raises
    ``APIConnectionError("Connection error.")``), and so would an application's
    own retry loop. The guard raises pytest's ``Failed`` (``pytest.fail``), a
    ``BaseException``: it passes every ``except Exception`` and fails the test on
    the first attempt, with our message as the test's error.

Which hosts:
    Every host but loopback (``localhost``, ``*.localhost``, ``127.0.0.0/8``,
    ``::1``, and the unspecified ``0.0.0.0`` / ``::`` that connect locally) is
    refused unless allowed: providers are reached under many names (Azure
    resources, gateways, OpenRouter, self-hosted proxies), and a list of known
    provider hosts would let a paid call through under a name nobody listed.
    Allowed entries are host names (``db.internal``), ``*.`` patterns
    (``*.openai.azure.com``) or IP addresses; the addresses an allowed name
    resolves to are allowed to be connected to.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

import pytest

__all__ = ["NetworkGuard", "is_loopback"]

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_INET_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)


def _normal(host: str) -> str:
    """A host as the guard compares it: lower-case, without brackets, a trailing dot or an IPv6 zone."""
    return host.strip().strip("[]").rstrip(".").split("%", 1)[0].lower()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine, as far as the guard is concerned.

    Args:
        host: A host name or an IP address, as a client hands it to ``getaddrinfo`` or ``connect``.

    Returns:
        True for ``localhost`` and ``*.localhost``, loopback addresses (IPv4-mapped ones too) and the
        unspecified addresses ``0.0.0.0`` / ``::`` (connecting to them reaches this machine).
    """
    name = _normal(host)
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


class NetworkGuard:
    """Refuses connections to every host but loopback and the allowed ones, while installed.

    One guard is installed per pytest run that asks for it (`install` / `uninstall`
    nest, so a ``pytester`` run inside a guarded run works); the hosts a test is
    allowed on top of the run's (its ``allow_llm_host`` marker, a cassette being
    recorded) are added with `allow_for_test` and dropped by `end_test`.
    """

    def __init__(self, allowed: Iterable[str], *, switched_on_by: str) -> None:
        """Create a guard; nothing is blocked before `install`.

        Args:
            allowed: Host names, ``*.`` patterns or IP addresses that may be reached besides loopback.
            switched_on_by: How the user turned the guard on, for the message (``"--block-llm-network"``).
        """
        self.switched_on_by = switched_on_by
        self._lock = threading.Lock()
        self._run_allowed = tuple(_normal(host) for host in allowed if host.strip())
        self._test_allowed: tuple[str, ...] = ()
        # Addresses that an allowed name resolved to: connect() sees only those.
        self._resolved: set[str] = set()

    # ---- the policy

    def allows(self, host: str) -> bool:
        """Whether ``host`` may be reached now (loopback, allowed for the run, or for the current test)."""
        if is_loopback(host):
            return True
        name = _normal(host)
        with self._lock:
            if name in self._resolved:
                return True
            patterns = self._run_allowed + self._test_allowed
        return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    def allow_for_test(self, hosts: Iterable[str]) -> None:
        """Allow ``hosts`` until `end_test`: the test's marker, or the provider of a cassette being recorded."""
        extra = tuple(_normal(host) for host in hosts if host.strip())
        with self._lock:
            self._test_allowed += extra

    def end_test(self) -> None:
        """Forget what `allow_for_test` allowed, and the addresses those hosts resolved to."""
        with self._lock:
            self._test_allowed = ()
            self._resolved.clear()

    def _remember(self, infos: list[Any]) -> None:
        with self._lock:
            for info in infos:
                address = info[4]
                if isinstance(address, tuple) and address and isinstance(address[0], str):
                    self._resolved.add(_normal(address[0]))

    def block(self, host: str, port: object) -> NoReturn:
        """Fail the running test because it tried to reach ``host``; the message says how to allow it."""
        __tracebackhide__ = True  # the report starts at the client's call, not in the guard
        name = _normal(host) or host
        where = f"{name}:{port}" if port not in (None, 0, "") else name
        pytest.fail(
            f"{self.switched_on_by} blocked a connection to {where}: tests may reach loopback hosts only "
            "(127.0.0.1, ::1, localhost).\n"
            "Point the client at a fake instead (the fake_openai_server fixture, or replay a cassette with "
            "llm_cassette), or allow this host: "
            f'@pytest.mark.allow_llm_host("{name}") on the test, --allow-llm-host={name} on the command line, '
            "or allow_llm_hosts in the ini file.",
            pytrace=True,
        )

    # ---- installing

    def install(self) -> None:
        """Start refusing connections (the socket functions are replaced on the first install)."""
        _install(self)

    def uninstall(self) -> None:
        """Stop refusing connections (the socket functions are restored when no guard is left)."""
        _uninstall(self)


# The guards installed, innermost last; the replaced socket functions ask the innermost one.
_guards: list[NetworkGuard] = []
_originals: dict[str, Any] = {}
_install_lock = threading.Lock()


def _current() -> NetworkGuard | None:
    guards = _guards
    return guards[-1] if guards else None


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    __tracebackhide__ = True
    guard = _current()
    original: Callable[..., Any] = _originals["getaddrinfo"]
    if guard is None or host is None:
        return original(host, port, *args, **kwargs)
    name = host.decode("idna") if isinstance(host, bytes) else str(host)
    if not guard.allows(name):
        guard.block(name, port)
    infos = original(host, port, *args, **kwargs)
    if not is_loopback(name):
        guard._remember(infos)
    return infos


def _check_connect(sock: socket.socket, address: Any) -> None:
    __tracebackhide__ = True
    guard = _current()
    if guard is None or sock.family not in _INET_FAMILIES:
        return  # Unix sockets and the like reach this machine only
    if isinstance(address, tuple) and address and isinstance(address[0], str | bytes):
        host = address[0].decode("idna") if isinstance(address[0], bytes) else address[0]
        if not guard.allows(host):
            guard.block(host, address[1] if len(address) > 1 else None)


def _guarded_connect(self: Any, address: Any) -> None:
    __tracebackhide__ = True
    _check_connect(self, address)
    _originals["connect"](self, address)


def _guarded_connect_ex(self: Any, address: Any) -> int:
    __tracebackhide__ = True
    _check_connect(self, address)
    result: int = _originals["connect_ex"](self, address)
    return result


def _install(guard: NetworkGuard) -> None:
    with _install_lock:
        if not _guards:
            _originals.update(
                getaddrinfo=socket.getaddrinfo, connect=socket.socket.connect, connect_ex=socket.socket.connect_ex
            )
            socket.getaddrinfo = _guarded_getaddrinfo
            socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
            socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
        _guards.append(guard)


def _uninstall(guard: NetworkGuard) -> None:
    with _install_lock:
        if guard not in _guards:
            return
        _guards.remove(guard)
        if not _guards:
            socket.getaddrinfo = _originals["getaddrinfo"]
            socket.socket.connect = _originals["connect"]  # type: ignore[method-assign]
            socket.socket.connect_ex = _originals["connect_ex"]  # type: ignore[method-assign]
            _originals.clear()
