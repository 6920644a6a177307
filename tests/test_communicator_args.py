"""Communicator(...) refuses bad arguments itself, naming the argument, before
anything touches the network.

Every call points at a listener that records connection attempts (a
constructor that went on to talk to the "master" would show there), and the
listener must have seen none. The good-argument case at the end proves that
the listener does see a real connect().
"""
from __future__ import annotations

import math
import select
import socket

import pytest

import jax_pccl as pccl


class Listener:
    """A TCP listener nobody should ever connect to."""

    def __init__(self, sock: socket.socket):
        self.sock, self.port = sock, sock.getsockname()[1]

    def attempts(self) -> bool:
        """Whether a connection reached it (the kernel queues it: readable)."""
        return bool(select.select([self.sock], [], [], 0.05)[0])


@pytest.fixture
def listener():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield Listener(s)


BAD_ADDRESSES = [
    # (address, exception, what the message must say)
    ("127.0.0.1", ValueError, "host:port"),  # no port
    ("127.0.0.1:", ValueError, "port"),
    ("127.0.0.1:0", ValueError, "port must be in 1..65535"),
    ("127.0.0.1:65536", ValueError, "port must be in 1..65535"),
    ("127.0.0.1:-5", ValueError, "port"),
    ("127.0.0.1:+80", ValueError, "port"),  # int() would take these: the port is digits only
    ("127.0.0.1: 80", ValueError, "port"),
    ("127.0.0.1:8_0", ValueError, "port"),
    (":{port}", ValueError, "no host"),
    ("[]:{port}", ValueError, "no host"),
    (" :{port}", ValueError, "host"),
    ("a host:{port}", ValueError, "host"),
    (None, TypeError, "address"),
    (b"127.0.0.1:{port}", TypeError, "address"),
    (("127.0.0.1", 1), TypeError, "address"),
]


@pytest.mark.parametrize("address,exc,says", BAD_ADDRESSES,
                         ids=[repr(a) for a, _, _ in BAD_ADDRESSES])
def test_bad_address_refused_before_any_connection(listener, address, exc, says):
    if isinstance(address, (str, bytes)):
        address = address.replace(b"{port}" if isinstance(address, bytes) else "{port}",
                                  str(listener.port).encode() if isinstance(address, bytes)
                                  else str(listener.port))
    with pytest.raises(exc, match="address") as info:
        pccl.Communicator(address, timeout=2.0)
    assert says in str(info.value), str(info.value)
    assert not listener.attempts()


BAD_TIMEOUTS = [
    (0, ValueError), (0.0, ValueError), (-1, ValueError), (-0.5, ValueError),
    (math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
    ("5", TypeError), (None, TypeError), (True, TypeError), (False, TypeError),
    ([1.0], TypeError), (1 + 2j, TypeError),
]


@pytest.mark.parametrize("timeout,exc", BAD_TIMEOUTS, ids=[repr(t) for t, _ in BAD_TIMEOUTS])
def test_bad_timeout_refused_naming_it(listener, timeout, exc):
    with pytest.raises(exc, match="timeout"):
        pccl.Communicator(f"127.0.0.1:{listener.port}", timeout=timeout)
    assert not listener.attempts()


BAD_GROUPS = [
    (-1, ValueError), (2**32, ValueError), (2**64, ValueError),
    (1.0, TypeError), ("0", TypeError), (None, TypeError), (True, TypeError), (False, TypeError),
]


@pytest.mark.parametrize("group,exc", BAD_GROUPS, ids=[repr(g) for g, _ in BAD_GROUPS])
def test_bad_peer_group_refused_naming_it(listener, group, exc):
    with pytest.raises(exc, match="peer_group"):
        pccl.Communicator(f"127.0.0.1:{listener.port}", peer_group=group, timeout=2.0)
    assert not listener.attempts()


BAD_ADVERTISE = [
    (None, TypeError), (123, TypeError), (b"127.0.0.1", TypeError),
    ("bad host", ValueError), ("host:1234", ValueError), ("127.0.0.1:80", ValueError),
    ("[::1]", ValueError), ("a/b", ValueError), (" ", ValueError), ("x" * 300, ValueError),
    ("-leading-hyphen", ValueError), ("two..dots", ValueError),
]


@pytest.mark.parametrize("host,exc", BAD_ADVERTISE, ids=[repr(h)[:20] for h, _ in BAD_ADVERTISE])
def test_bad_advertise_host_refused_naming_it(listener, host, exc):
    """advertise_host is the host the other peers connect to (the master
    lists "host:listen_port" for the ring): a value they could never
    connect to is refused here, not found out when a neighbour's connect
    fails later. "" (the default) means: the address the master sees."""
    with pytest.raises(exc, match="advertise_host"):
        pccl.Communicator(f"127.0.0.1:{listener.port}", advertise_host=host, timeout=2.0)
    assert not listener.attempts()


@pytest.mark.parametrize("host", ["", "127.0.0.1", "localhost", "::1", "node-7.cluster.local",
                                  "trainer_0", "10.0.0.7"])
def test_good_advertise_hosts_are_accepted(listener, host):
    pccl.Communicator(f"127.0.0.1:{listener.port}", advertise_host=host, timeout=2.0).close()
    assert not listener.attempts()


@pytest.mark.parametrize("kwargs", [
    {}, {"timeout": 0.5}, {"timeout": 7}, {"timeout": 1e6}, {"peer_group": 0},
    {"peer_group": 2**32 - 1}, {"address": "localhost:{port}"}, {"address": "[127.0.0.1]:{port}"},
])
def test_good_arguments_are_accepted_off_the_network(listener, kwargs):
    kwargs = dict(kwargs)
    address = kwargs.pop("address", "127.0.0.1:{port}").replace("{port}", str(listener.port))
    kwargs.setdefault("timeout", 2.0)
    pccl.Communicator(address, **kwargs).close()
    assert not listener.attempts()


def test_the_listener_sees_a_real_connect(listener):
    """The check the tests above rely on is not blind: connect() shows."""
    comm = pccl.Communicator(f"127.0.0.1:{listener.port}", timeout=1.0)
    try:
        assert not listener.attempts()
        with pytest.raises(pccl.PcclError):
            comm.connect(timeout=1.0)  # the listener never answers the handshake
        assert listener.attempts(), "connect() did not reach the listener"
    finally:
        comm.close()


BAD_PROBES = [({"probe_seconds": 0}, "probe_seconds"), ({"probe_seconds": 61}, "probe_seconds"),
              ({"probe_seconds": float("nan")}, "probe_seconds"),
              ({"probe_seconds": True}, "probe_seconds"), ({"probe_seconds": "1"}, "probe_seconds"),
              ({"probe_connections": 0}, "probe_connections"),
              ({"probe_connections": 33}, "probe_connections"),
              ({"probe_connections": 2.0}, "probe_connections"),
              ({"probe_connections": True}, "probe_connections")]


@pytest.mark.parametrize("kwargs,says", BAD_PROBES, ids=[repr(k) for k, _ in BAD_PROBES])
def test_bad_master_probe_settings_refused_naming_them(kwargs, says):
    with pytest.raises(ValueError, match=says):
        pccl.Master(host="127.0.0.1", port=0, **kwargs)


def test_master_probe_settings_at_their_bounds_are_accepted():
    for kwargs in ({"probe_seconds": 0.001, "probe_connections": 1},
                   {"probe_seconds": 60, "probe_connections": 32}):
        with pccl.Master(host="127.0.0.1", port=0, **kwargs) as master:
            assert master.status()["world_size"] == 0
