"""The identity layer: keys, seed phrases, the on-disk keystore, delegation, op and HTTP signatures.

Pure modules (no network, no asyncio); ``keystore`` alone touches files. See docs/identity.md.
"""

from __future__ import annotations

from statebus.identity.delegation import Keyring, Record, delegate, parse_record, record_key, revoke
from statebus.identity.httpsig import asgi_target_uri, sign_request, verify_request
from statebus.identity.keys import (
    ROOT_PATH,
    Identity,
    derive,
    identity_from_mnemonic,
    new_mnemonic,
    verify_signature,
)
from statebus.identity.signing import check_signature, sign_batch, sign_op, verify_op

__all__ = [
    "ROOT_PATH",
    "Identity",
    "Keyring",
    "Record",
    "asgi_target_uri",
    "check_signature",
    "delegate",
    "derive",
    "identity_from_mnemonic",
    "new_mnemonic",
    "parse_record",
    "record_key",
    "revoke",
    "sign_batch",
    "sign_op",
    "sign_request",
    "verify_op",
    "verify_request",
    "verify_signature",
]
