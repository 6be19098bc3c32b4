// The handlers of the test app "gb" (a guestbook), in the manifest shape docs/apps.md describes.

function validateEntry(op, current) {
  const v = op.value;
  if (op.kind === "delete") return true;
  if (typeof v !== "object" || v === null) return "an entry is an object";
  if (typeof v.text !== "string") return "an entry has a text";
  if (v.text.length > 280) return "an entry is at most 280 characters, not " + v.text.length;
  if (v.text === "throw") throw new Error("asked to throw");
  return true;
}

function countEntries(key) {
  const names = host.list("gb/entries/");
  let chars = 0;
  for (const n of names) {
    const e = host.get("gb/entries/" + n);
    if (e && typeof e.text === "string") chars += e.text.length;
  }
  return {count: names.length, chars: chars};
}

function onEntry(op) {
  host.log("entry " + op.key);
  host.put("gb/last", {key: op.key, by: op.author.slice(0, 8)});
}

function spin(op) { while (true) {} }
function grow(op) { const a = []; while (true) { a.push(new Array(100000).fill(1)); } }
function deep(op) { function f(n) { return f(n + 1) + 1; } return f(0); }
function nonJson(op) { return {big: 10n}; }
function huge(op) { return "x".repeat(10 * 1024 * 1024); }
function readSecret(op) { return host.get("private/diary") === undefined; }
function writeOutside(op) { host.put("private/diary", "pwned"); return true; }
function putInValidate(op) { host.put("gb/last", 1); return true; }
function coin(op) { return Math.random() < 0.5 || "tails (" + Date.now() + ")"; }
function chatty(op) { for (let i = 0; i < 50; i++) host.log("line " + i + "\nforged: entry"); return true; }
function busyHost(op) { for (let i = 0; i < 1000; i++) { try { host.get("gb/entries/x"); } catch (e) {} } return true; }
