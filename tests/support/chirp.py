"""apps/chirp on real nodes for the Chromium tests and the benchmarks: the repo's folder re-signed by a
test author, checked and installed through the owner's app routes, and the owner's browser launch."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import httpx

from statebus.apps.bundle import pack, sign
from statebus.http.apps import APPS_PATH, BUNDLE_TYPE, SIGNATURE_HEADER
from tests.apps.bundles import MAX, author_key

CHIRP = Path(__file__).resolve().parents[2] / "apps" / "chirp"
GRANT = {
    "read": ["chirp/", "inbox/chirp/"],
    "write": ["chirp/", "inbox/chirp/"],
    "read_others": ["chirp/"],
    "send": ["inbox/chirp/"],
}


def chirp_bundle(tmp: Path) -> tuple[bytes, str]:
    """apps/chirp packed and signed by the test author: (bundle bytes, signature header value)."""
    author = author_key()
    folder = tmp / "chirp-src"
    if not folder.exists():
        shutil.copytree(CHIRP, folder)
        manifest = json.loads((folder / "statebus-app.json").read_text())
        manifest["author"] = author.pubkey
        (folder / "statebus-app.json").write_text(json.dumps(manifest, indent=2))
    data = pack(folder, MAX)
    return data, base64.b64encode(json.dumps(sign(data, author).to_json()).encode()).decode()


async def install_chirp(base_url: str, token: str, tmp: Path) -> str:
    """Install chirp on the node at ``base_url`` with the grant it asks for; returns the bundle hash."""
    data, sig = chirp_bundle(tmp)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=20, trust_env=False) as client:
        check = await client.post(
            APPS_PATH + "/check", content=data, headers={"content-type": BUNDLE_TYPE, SIGNATURE_HEADER: sig}
        )
        check.raise_for_status()
        digest = hashlib.sha256(data).hexdigest()
        (await client.post(APPS_PATH + "/install", json={"hash": digest, "grant": GRANT})).raise_for_status()
    return digest


def launch(url: str, token: str) -> list[str]:
    """The pages a browser opens first to be the owner on chirp's origin (login, then launch)."""
    return [f"{url}/login?token={token}", f"{url}/launch/chirp"]


def chirp_url(port: int) -> str:
    return f"http://chirp.localhost:{port}/"
