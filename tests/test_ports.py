"""Servers started by one process never share a port (CI once saw nats-server handed the same port twice)."""

from photoenhance.servers import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    singles = [free_port() for _ in range(300)]
    pairs = [free_port(also_plus=10000) for _ in range(50)]
    taken = singles + pairs + [p + 10000 for p in pairs]
    assert len(set(taken)) == len(taken)
