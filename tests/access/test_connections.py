"""The connection table: caps in total and per address, the owner's reserve, proxied attribution."""

from __future__ import annotations

from statebus.access.connections import (
    FD_HEADROOM,
    Admission,
    ConnectionCaps,
    ConnectionTable,
    connection_caps,
)


def test_caps_stay_below_the_open_file_limit() -> None:
    assert connection_caps(10_000, 256, 16, 1024) == ConnectionCaps(
        total=1024 - FD_HEADROOM, per_ip=256, reserve=16
    )
    assert connection_caps(500, 256, 16, 1 << 20).total == 500
    tiny = connection_caps(10_000, 256, 16, 100)
    assert tiny.total == 2 and tiny.reserve == 1 and tiny.ordinary == 1


def test_per_address_cap_falls_back_to_the_reserve() -> None:
    table = ConnectionTable(ConnectionCaps(total=10, per_ip=2, reserve=2))
    assert [table.open(i, "a")[0] for i in range(2)] == [Admission.ORDINARY] * 2
    assert table.open(2, "a") == (Admission.RESERVE, None)
    assert table.is_reserve(2) and table.over_ip(2)
    assert table.open(3, "b") == (Admission.ORDINARY, None)
    table.close(0)
    table.close(0)  # twice is harmless
    assert table.count("a") == 1 and table.open(4, "a")[0] is Admission.ORDINARY


def test_a_full_reserve_displaces_its_oldest_unproven_connection() -> None:
    table = ConnectionTable(ConnectionCaps(total=4, per_ip=10, reserve=2))
    for i in range(2):
        table.open(i, f"10.0.0.{i}")
    assert table.open("r1", "x") == (Admission.RESERVE, None)
    assert table.open("r2", "y") == (Admission.RESERVE, None)
    table.prove("r1")  # the owner's: never displaced
    assert table.open("r3", "z") == (Admission.RESERVE, "r2")
    table.prove("r3")
    assert table.open("r4", "z") == (Admission.REFUSED, None)
    assert len(table) == 4 and table.reserve_in_use == 2


def test_a_proxied_connection_counts_against_the_client_it_carries() -> None:
    table = ConnectionTable(ConnectionCaps(total=10, per_ip=1, reserve=1))
    for conn in ("p1", "p2", "p3"):
        assert table.open(conn, "proxy", proxied=True)[0] is Admission.ORDINARY
    assert table.count("proxy") == 0
    assert table.attribute("p1", "c1") and table.count("c1") == 1
    assert not table.attribute("p2", "c1")
    assert table.attribute("p2", "c2")
    table.detach("p1")
    assert table.count("c1") == 0 and table.attribute("p3", "c1")
    table.close("p3")
    assert table.count("c1") == 0
