// The join page: reads the invite from the fragment (never sent to a server) and shows what it is.
// The node's `statebus join` checks the signature; this page only explains the invite.
"use strict";

function decode(payload) {
  const parts = payload.split(".");
  if (parts.length !== 3 || parts[0] !== "sbi1") throw new Error("this is not a statebus invite");
  const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
  const text = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return JSON.parse(text);
}

function row(dl, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

document.addEventListener("DOMContentLoaded", () => {
  const payload = decodeURIComponent(location.hash.slice(1));
  const link = location.origin + location.pathname + "#" + payload;
  const summary = document.getElementById("summary");
  try {
    const inv = decode(payload);
    const dl = document.getElementById("details");
    summary.textContent = inv.app
      ? `${inv.by.slice(0, 12)}… invites you to ${inv.app.name}.`
      : `${inv.by.slice(0, 12)}… invites you to their network.`;
    row(dl, "From", inv.by);
    if (inv.note) row(dl, "Note", inv.note);
    if (inv.app) row(dl, "App", `${inv.app.name} (bundle sha256 ${inv.app.hash.slice(0, 16)}…, ${inv.app.size} bytes)`);
    if (inv.dht) row(dl, "DHT", `${inv.dht.name}, first peer ${inv.dht.peer}`);
    row(dl, "Inviter's node", inv.addrs.join(", "));
    row(dl, "Expires", new Date(inv.exp * 1000).toString());
    row(dl, "Uses", String(inv.uses));
    document.getElementById("serve").textContent = `statebus serve --join '${link}'`;
    document.getElementById("join").textContent = `statebus join '${link}'`;
  } catch (err) {
    summary.textContent = "This page needs an invite after its # (the link is incomplete).";
    const e = document.getElementById("error");
    e.hidden = false;
    e.textContent = String(err.message || err);
  }
});
