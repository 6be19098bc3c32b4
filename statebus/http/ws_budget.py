"""What one websocket connection may send: messages and bytes per second, counted on arrival.

A connection holds two leaky buckets, one of messages and one of bytes. Each message is counted
when it arrives, before it is parsed or answered, so a client that sends nonstop gets cut whatever
the node replies (a flood of ``{"forget": "x"}`` gets no reply at all). The owner's connections get
``ws_owner_factor`` times the rates. Sans-IO: the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from statebus.config import Settings


class LeakyBucket:
    """A level that drains at ``rate`` per second and may not pass ``burst``."""

    __slots__ = ("level", "stamp")

    def __init__(self, now: float) -> None:
        self.level = 0.0
        self.stamp = now

    def take(self, amount: float, rate: float, burst: float, now: float) -> bool:
        """Add ``amount`` unless that would pass ``burst`` (then nothing changes): True if added."""
        self.level = max(0.0, self.level - max(0.0, now - self.stamp) * rate)
        self.stamp = now
        if self.level + amount > burst:
            return False
        self.level += amount
        return True


@dataclass(frozen=True, slots=True)
class Rates:
    """The per-connection rates of a node's websocket (from :class:`~statebus.config.Settings`)."""

    messages: int
    """Messages per second (also the burst: one second's worth)."""
    bytes: int
    """Bytes per second."""
    byte_burst: int
    """Most bytes at once: one second's worth, and at least one message of the largest size."""
    owner_factor: int

    @classmethod
    def of(cls, settings: Settings) -> Rates:
        return cls(
            settings.ws_message_rate,
            settings.ws_byte_rate,
            max(settings.ws_byte_rate, settings.max_body_bytes),
            settings.ws_owner_factor,
        )


class ConnectionBudget:
    """The budget of one connection. :meth:`spend` says why a message is over it, or None."""

    def __init__(self, rates: Rates, now: float) -> None:
        self.rates = rates
        self.messages = LeakyBucket(now)
        self.bytes = LeakyBucket(now)

    def spend(self, size: int, *, owner: bool, now: float) -> str | None:
        """Count one message of ``size`` bytes; the reason it is refused (a close reason), or None."""
        r = self.rates
        factor = r.owner_factor if owner else 1
        if not self.messages.take(1, r.messages * factor, r.messages * factor, now):
            return f"over {r.messages * factor} messages per second"
        if not self.bytes.take(size, r.bytes * factor, r.byte_burst * factor, now):
            return f"over {r.bytes * factor} bytes per second"
        return None
