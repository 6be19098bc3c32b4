"""Client addresses behind trusted proxies: the right-most untrusted X-Forwarded-For entry."""

from __future__ import annotations

import pytest

from statebus.access.proxies import TrustedProxies, parse_ip
from statebus.config import Settings
from statebus.errors import InvalidValue


def test_no_trusted_proxy_means_the_header_is_ignored() -> None:
    assert TrustedProxies().client("127.0.0.1", ["1.2.3.4"]) == "127.0.0.1"
    assert not TrustedProxies()


def test_the_client_is_the_right_most_untrusted_address() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    assert proxies.client("127.0.0.1", ["1.2.3.4"]) == "1.2.3.4"
    assert proxies.client("127.0.0.1", ["6.6.6.6, 1.2.3.4", "10.1.1.1"]) == "1.2.3.4"  # forged on the left
    assert proxies.client("203.0.113.5", ["1.2.3.4"]) == "203.0.113.5"  # not a proxy: ignored
    assert proxies.client("127.0.0.1", ["10.0.0.2, 10.0.0.3"]) == "10.0.0.2"  # proxies all the way
    assert proxies.client("127.0.0.1", ["1.2.3.4, garbage"]) == "127.0.0.1"  # garbled: the last hop
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"
    assert proxies.client("127.0.0.1", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert proxies.scheme("127.0.0.1", "https") == "https"
    assert proxies.scheme("203.0.113.5", "https") is None
    assert proxies.scheme("127.0.0.1", "gopher") is None


def test_parse_ip_forms() -> None:
    assert str(parse_ip("1.2.3.4:80")) == "1.2.3.4"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip("unknown") is None


def test_trusted_proxies_setting() -> None:
    loaded = Settings.load(env={"STATEBUS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8", "HOME": "/h"})
    assert loaded.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
    with pytest.raises(InvalidValue, match="STATEBUS_TRUSTED_PROXIES"):
        Settings.load(env={"STATEBUS_TRUSTED_PROXIES": "nginx", "HOME": "/h"})
