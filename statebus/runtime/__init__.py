"""The async shell around the bus: group commit, async event streams, the Node facade."""

from statebus.runtime.committer import GroupCommitter
from statebus.runtime.node import Node
from statebus.runtime.streams import EventStream, OpenEvents

__all__ = ["EventStream", "GroupCommitter", "Node", "OpenEvents"]
