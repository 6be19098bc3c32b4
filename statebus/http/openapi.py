"""The OpenAPI 3.1 description of a node's HTTP API, served at ``GET /openapi.json``.

Hand-written (the key routes are one catch-all path, which no framework would describe well): keys
are the URL path, in the node's own namespace ``/~/…`` or any ``/<pubkey>/…``. Mount with
``routes()`` before the key catch-all. The fuzz test (tests/e2e/test_fuzz.py) drives a live node
from this description, so it lists every status a route may answer.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

OPENAPI_PATH: Final = "/openapi.json"
OP_MEDIA_TYPE: Final = "application/vnd.statebus.op+json"

_ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_ERRORS: Final[dict[str, Any]] = {
    "400": _err("malformed key, value, range, header or op"),
    "401": _err("anonymous, a bad owner token, or a request or op signature that does not verify"),
    "403": _err("the client may not do this (ACL, delegation, deny-list)"),
    "413": _err("the body or value is over its limit, or a namespace over its quota"),
    "429": _err("over a rate limit or the open-subscription limit (see Retry-After)"),
}

_PATH_PARAM: Final[dict[str, Any]] = {
    "name": "path",
    "in": "path",
    "required": True,
    "description": "the key after the namespace, e.g. app/posts/42",
    "schema": {"type": "string", "pattern": "^[^/]+(/[^/]+)*$"},
}

_VERSION: Final[dict[str, Any]] = {
    "name": "Version",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": 'Braid version of the write, e.g. "v1"',
}
_PARENTS: Final[dict[str, Any]] = {
    "name": "Parents",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": 'Braid parents, e.g. "v1", "v2"',
}

_WRITTEN: Final[dict[str, Any]] = {
    "description": "written (durable): the new version and node cursor",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["version", "seq"],
                "properties": {
                    "version": {"type": "array", "items": {"type": "string"}},
                    "seq": {"type": "integer"},
                },
            }
        }
    },
}


_NAMESPACE_PARAM: Final[dict[str, Any]] = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "description": "a namespace: the owner's Ed25519 public key, 52 base32 characters",
    "schema": {"type": "string", "pattern": "^[a-z2-7]{51}[aq]$"},
}


def _key_item(namespace: str) -> dict[str, Any]:
    where = "this node's namespace" if namespace == "~" else "the namespace of a public key"
    return {
        "parameters": [_PATH_PARAM] if namespace == "~" else [_NAMESPACE_PARAM, _PATH_PARAM],
        "get": {
            "summary": f"Read a key in {where} (JSON or bytes); with Accept: text/event-stream or "
            "Subscribe, stream it",
            "parameters": [
                {"name": "range", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                {**_VERSION, "description": 'a past version to read, e.g. "v1"'},
                {"name": "version", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "history",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "list the key's versions (with after=SEQ, limit=N)",
                },
                {
                    "name": "Range",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "json <range> (JSON values) or bytes=… (binary values)",
                },
                {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}},
                {
                    "name": "State-Vector",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "with Accept: application/vnd.yjs.update, the updates a document with "
                    "this Yjs state vector (base64) lacks; also ?since= or ?state_vector=",
                },
            ],
            "responses": {
                "200": {
                    "description": "the value (Yjs update bytes with Accept: application/vnd.yjs.update)",
                    "content": {
                        "application/json": {"schema": {}},
                        "application/vnd.yjs.update": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "206": {
                    "description": "the range of the value",
                    "content": {"application/json": {"schema": {}}},
                },
                "304": {"description": "not modified"},
                "404": _err("no value at this key"),
                "406": _err("Yjs updates asked of a key that is not yjs"),
                "410": _err("that version was compacted away (the detail names the horizon)"),
                "416": _err("the range does not apply"),
                **_ERRORS,
            },
        },
        "put": {
            "summary": "Replace the value (JSON or bytes), patch it (Content-Range / Patches), or "
            f"store a signed op ({OP_MEDIA_TYPE}, the way clients other than the owner write)",
            "parameters": [_VERSION, _PARENTS],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {}},
                    OP_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Op"}},
                },
            },
            "responses": {
                "200": _WRITTEN,
                "404": _err("nothing to patch"),
                "409": _err("version conflict"),
                **_ERRORS,
            },
        },
        "patch": {
            "summary": "Apply Braid range patches, or merge a Yjs update",
            "parameters": [
                _VERSION,
                _PARENTS,
                {"name": "Content-Range", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": {
                "200": _WRITTEN,
                "404": _err("nothing to patch"),
                "409": _err("version conflict"),
                **_ERRORS,
            },
        },
        "delete": {
            "summary": "Delete the key (owner; other clients PUT a signed delete op)",
            "responses": {"200": _WRITTEN, "404": _err("no value at this key"), **_ERRORS},
        },
    }


def _subtree_item() -> dict[str, Any]:
    return {
        "parameters": [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[^/]+(/[^/]+)*$"},
            }
        ],
        "get": {
            "summary": "List the children of a subtree the client may see (paginated); with "
            "Accept: text/event-stream, stream every readable key below it",
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                "200": {
                    "description": "children: names of keys, and of subtrees with a trailing /",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["key", "children", "next"],
                                "properties": {
                                    "key": {"type": "string"},
                                    "children": {"type": "array", "items": {"type": "string"}},
                                    "next": {"type": ["string", "null"]},
                                },
                            }
                        }
                    },
                },
                **_ERRORS,
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "statebus node",
            "version": "1",
            "description": "A reactive key-value node. Keys are URL paths: /~/… is this node's "
            "namespace, /<pubkey>/… any namespace. Owner: Authorization: Bearer <owner token>. "
            "Other clients sign requests with HTTP Message Signatures (RFC 9421, Ed25519, keyid = "
            "pubkey) and write by sending their signed ops. See docs/http-api.md, "
            "docs/access-control.md and docs/trust-model.md.",
        },
        "paths": {
            "/~/{path}": _key_item("~"),
            "/~/{path}/": _subtree_item(),
            "/{namespace}/{path}": _key_item("pubkey"),
            "/login": {
                "get": {
                    "summary": "Log the owner in: sets the node's login cookie (statebus_<id>)",
                    "parameters": [
                        {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"303": {"description": "logged in"}, "401": _err("wrong token")},
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {}}}}
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Op": {
                    "type": "object",
                    "description": "A canonical op (see statebus.oplog.codec), signed by its author: "
                    "k key, v version, p parents, a author, c clock, m merge type, t kind, b JSON body, "
                    "bb base64 bytes, ct content type, s base64 signature",
                    "required": ["k", "v", "a", "c", "m", "t", "s"],
                    "properties": {
                        "k": {"type": "string"},
                        "v": {"type": "string"},
                        "p": {"type": "array", "items": {"type": "string"}},
                        "a": {"type": "string"},
                        "c": {"type": "integer"},
                        "m": {"type": "string", "enum": ["lww", "yjs"]},
                        "t": {"type": "string", "enum": ["set", "patch", "delete", "crdt"]},
                        "b": {},
                        "bb": {"type": "string"},
                        "ct": {"type": "string"},
                        "s": {"type": "string"},
                    },
                },
            },
            "securitySchemes": {
                "owner": {"type": "http", "scheme": "bearer"},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 HTTP Message Signature (with Signature-Input, Content-Digest)",
                },
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


def routes() -> list[BaseRoute]:
    """The route serving the document (mount before the key catch-all)."""
    return [Route(OPENAPI_PATH, openapi_json, methods=["GET"])]
