"""Invite links that replicate an app; the inviter is the first peer (docs/invites.md)."""
