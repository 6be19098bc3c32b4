// Guestbook handlers. Plain functions; the node calls them by the names statebus-app.json gives.
// They run in the node's sandbox (quickjs on wasmtime): no file system, network, clock or
// randomness of their own, and only the host API of the app's grants.

const MAX_TEXT = 500;
const MAX_NAME = 80;

// validate(op, current): runs before every write under guestbook/entries/*, local or from another
// node. Return true to accept; throw (or return a string) to refuse with that reason.
function validateEntry(op, current) {
  if (op.kind === "delete") return true; // the owner may delete an entry
  const entry = op.value;
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
    throw new Error("an entry is an object {name, text}");
  }
  if (typeof entry.name !== "string" || entry.name.trim() === "") {
    throw new Error("name is required");
  }
  if (typeof entry.text !== "string" || entry.text.trim() === "") {
    throw new Error("text is required");
  }
  if (entry.name.length > MAX_NAME) throw new Error(`name is at most ${MAX_NAME} characters`);
  if (entry.text.length > MAX_TEXT) throw new Error(`text is at most ${MAX_TEXT} characters`);
  return true;
}

// derive(key): guestbook/count is computed, never written. It is re-run when a key it read changes.
function countEntries(key) {
  return host.list("guestbook/entries/").length;
}
