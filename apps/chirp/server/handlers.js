// chirp's handlers. They run in the node's sandbox (quickjs on wasmtime) before every write under the
// patterns statebus-app.json names: the owner's own writes AND the ops that arrive from other nodes
// through federation. So a post of 281 characters is refused by every follower's node, whoever
// signed it, and the block list is enforced by the store: a blocked key's posts (replies, reposts)
// and likes are refused at this node's gate and never stored here.

const MAX_TEXT = 280;
const MAX_IMAGES = 4;
const POST_KEY = /^\/[a-z2-7]{52}\/chirp\/posts\/[A-Za-z0-9_-]{1,64}$/;
const OWN_KEY = /^chirp\/images\/[A-Za-z0-9._-]{1,64}$/;
const PUBKEY = /^[a-z2-7]{52}$/;

function object(value, what) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${what} is a JSON object`);
  }
  return value;
}

// The store's block list: the owner's chirp/blocks/<pubkey>. A write from another namespace whose
// author the owner blocked is refused (it is not stored, so it is never shown or relayed from here).
function refuseBlocked(op) {
  if (op.own) return;
  if (host.get("chirp/blocks/" + op.namespace) !== null) throw new Error(`${op.namespace} is blocked here`);
}

function checkPost(op, current) {
  refuseBlocked(op);
  if (op.kind === "delete") return true; // an author deletes their own post
  const post = object(op.value, "a post");
  const text = post.text === undefined ? "" : post.text;
  if (typeof text !== "string") throw new Error("text is a string");
  const chars = [...text].length; // characters as a reader counts them (code points), not UTF-16 units
  if (chars > MAX_TEXT) throw new Error(`a post is at most ${MAX_TEXT} characters, not ${chars}`);
  if (!Number.isFinite(post.at) || post.at < 0) throw new Error("at is the post's time in ms");
  for (const field of ["reply_to", "repost_of", "quote_of"]) {
    if (post[field] !== undefined && !POST_KEY.test(post[field])) {
      throw new Error(`${field} names a post: /<pubkey>/chirp/posts/<id>`);
    }
  }
  if (post.repost_of === undefined && chars === 0 && !(post.images || []).length) {
    throw new Error("an empty post says nothing");
  }
  const images = post.images === undefined ? [] : post.images;
  if (!Array.isArray(images) || images.length > MAX_IMAGES) throw new Error(`at most ${MAX_IMAGES} images`);
  for (const img of images) {
    if (typeof img !== "string" || !OWN_KEY.test(img)) throw new Error("an image is a key chirp/images/<name>");
  }
  for (const pk of post.mentions || []) {
    if (!PUBKEY.test(pk)) throw new Error("a mention is a pubkey");
  }
  return true;
}

function checkLike(op, current) {
  refuseBlocked(op);
  if (op.kind === "delete") return true;
  const like = object(op.value, "a like");
  if (!POST_KEY.test(like.post)) throw new Error("post names a post: /<pubkey>/chirp/posts/<id>");
  return true;
}

// chirp/follows/<pubkey>, chirp/blocks/<pubkey>, chirp/mutes/<pubkey>: the name is the pubkey.
function checkMark(op, current) {
  const name = op.key.slice(op.key.lastIndexOf("/") + 1);
  if (!PUBKEY.test(name)) throw new Error(`${name} is not a pubkey (52 base32 characters)`);
  if (op.kind === "delete") return true;
  object(op.value, "a follow, block or mute");
  return true;
}

function checkProfile(op, current) {
  if (op.kind === "delete") return true;
  const p = object(op.value, "a profile");
  if (p.avatar !== undefined && !OWN_KEY.test(p.avatar)) throw new Error("avatar is a key chirp/images/<name>");
  return true;
}

// The node calls these. A refusal is returned as a string, so the writer sees "app chirp refused
// <key>: <reason>"; anything else a check throws (a bug) still refuses, as "… threw: …".
function refusing(check, op, current) {
  try {
    return check(op, current);
  } catch (e) {
    return e.message;
  }
}
function validatePost(op, current) { return refusing(checkPost, op, current); }
function validateLike(op, current) { return refusing(checkLike, op, current); }
function validateMark(op, current) { return refusing(checkMark, op, current); }
function validateProfile(op, current) { return refusing(checkProfile, op, current); }
