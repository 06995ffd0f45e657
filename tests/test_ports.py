"""Servers started by one process never share a port (CI once saw nats-server handed the same port twice)."""

from photoenhance.servers import PORTS_FROM, ephemeral_ports_from, free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    singles = [free_port() for _ in range(300)]
    pairs = [free_port(also_plus=10000) for _ in range(50)]
    taken = singles + pairs + [p + 10000 for p in pairs]
    assert len(set(taken)) == len(taken)


def test_ports_are_drawn_below_the_range_outgoing_connections_take_theirs_from() -> None:
    """The kernel gives every outgoing connection a source port from its ephemeral range: a server's port drawn
    there could be taken before the server binds it (a test's S3 server once failed to start so)."""
    top = ephemeral_ports_from()
    assert all(PORTS_FROM <= free_port() < top for _ in range(100))
    assert all(p >= PORTS_FROM and p + 10000 < top for p in (free_port(also_plus=10000) for _ in range(50)))
