"""The bus: reads, writes, remote ops, subscriptions and reactive keys. Synchronous, no I/O."""

from statebus.bus.bus import Bus
from statebus.bus.changes import Change
from statebus.bus.reader import KeyReader
from statebus.bus.subscriptions import Subscription

__all__ = ["Bus", "Change", "KeyReader", "Subscription"]
