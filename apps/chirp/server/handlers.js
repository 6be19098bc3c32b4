// chirp's handlers. They run in the node's sandbox (quickjs on wasmtime) before every write under the
// patterns statebus-app.json names: the owner's own writes AND the ops that arrive from other nodes
// through federation. So a post of 281 characters is refused by every follower's node, whoever
// signed it, and the block list is enforced by the store: a blocked key's posts (replies, reposts)
// and likes are refused at this node's gate and never stored here.
//
// The inbox: inbox/chirp/<sender>/<name> holds small notices other keys write into the owner's
// namespace (outside chirp/, so sharing chirp/ never shares it) ("bob replied to your post", signed by bob), so a reply, like, repost, quote, mention or
// follow from someone the owner does not follow still reaches them. validateNotice checks each one
// here; the notify* on_write handlers send them (host.put of another namespace's inbox key: the
// node's courier signs the notice with this node's key and delivers it to the author's node).

const MAX_TEXT = 280;
const MAX_IMAGES = 4;
const POST_KEY = /^\/[a-z2-7]{52}\/chirp\/posts\/[A-Za-z0-9_-]{1,64}$/;
const OWN_KEY = /^chirp\/images\/[A-Za-z0-9._-]{1,64}$/;
const PUBKEY = /^[a-z2-7]{52}$/;
const INBOX_KEY = /^inbox\/chirp\/([a-z2-7]{52})\/([A-Za-z0-9_-]{1,80})$/;
const NOTICE_TYPES = ["reply", "like", "repost", "quote", "mention", "follow"];
const NOTICE_FIELDS = ["type", "from", "post", "text", "at"];
const MAX_FOLLOWS_CHECKED = 200; // "follows" inbox: the follows whose own follows are looked at

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

// The inbox policy is the owner's chirp/settings {"inbox": "anyone" | "follows" | "closed"}:
// "follows" takes notices from people the owner follows and people they follow.
function admitsSender(sender) {
  const settings = host.get("chirp/settings");
  const mode = (settings && settings.inbox) || "anyone";
  if (mode === "closed") throw new Error("this inbox is closed");
  if (mode !== "follows") return;
  if (host.get("chirp/follows/" + sender) !== null) return;
  const mine = host.list("chirp/follows/").slice(0, MAX_FOLLOWS_CHECKED);
  for (const pk of mine) {
    if (PUBKEY.test(pk) && host.get("/" + pk + "/chirp/follows/" + sender) !== null) return;
  }
  throw new Error("this inbox takes notices from people its owner follows and people they follow");
}

function checkNotice(op, current) {
  const m = INBOX_KEY.exec(op.key);
  if (!m) throw new Error("a notice is inbox/chirp/<sender pubkey>/<name>");
  const sender = m[1];
  if (op.author !== sender && !(op.kind === "delete" && op.author === op.namespace)) {
    throw new Error("a notice is written by its sender (inbox/chirp/<sender>/…); the owner may delete it");
  }
  if (op.own && op.author === sender) {
    if (host.get("chirp/blocks/" + sender) !== null) throw new Error(`${sender} is blocked here`);
  }
  if (op.kind === "delete") return true;
  const n = object(op.value, "a notice");
  for (const k of Object.keys(n)) {
    if (!NOTICE_FIELDS.includes(k)) throw new Error(`a notice has only ${NOTICE_FIELDS.join(", ")}; not ${k}`);
  }
  if (!NOTICE_TYPES.includes(n.type)) throw new Error(`a notice's type is one of ${NOTICE_TYPES.join(", ")}`);
  if (!Number.isFinite(n.at) || n.at < 0) throw new Error("at is the notice's time in ms");
  const from = new RegExp(`^/${sender}/chirp/(posts|likes|follows)/[A-Za-z0-9_-]{1,128}$`);
  if (typeof n.from !== "string" || !from.test(n.from)) {
    throw new Error("from names the sender's own record: /<sender>/chirp/(posts|likes|follows)/<name>");
  }
  if (n.text !== undefined) {
    if (typeof n.text !== "string") throw new Error("text is a string");
    const chars = [...n.text].length;
    if (chars > MAX_TEXT) throw new Error(`a notice's text is at most ${MAX_TEXT} characters, not ${chars}`);
  }
  const needsPost = n.type !== "mention" && n.type !== "follow";
  if (needsPost || n.post !== undefined) {
    if (typeof n.post !== "string" || !POST_KEY.test(n.post)) {
      throw new Error("post names the post it is about: /<pubkey>/chirp/posts/<id>");
    }
    if (n.post.slice(1, 53) !== op.namespace) throw new Error("post names a post of this inbox's owner");
  }
  if (!op.own) return true; // a replica of someone's inbox: its owner's node checked the rest
  if (n.post !== undefined && host.get(n.post.slice(54)) === null) {
    throw new Error(`${n.post} is no post of this node's owner`);
  }
  admitsSender(sender); // how many notices one sender keeps here is bounded by the node's guest quota
  return true;
}

// on_write: after the owner's own write, tell the other people it concerns, through their inboxes.
function notify(w, target, name, notice) {
  if (target === w.namespace || !PUBKEY.test(target)) return;
  try {
    host.put(`/${target}/inbox/chirp/${w.namespace}/${name}`, notice);
  } catch (e) {
    host.log(`no notice to ${target}: ${e.message}`);
  }
}

function ownerOf(key) {
  return typeof key === "string" && POST_KEY.test(key) ? key.slice(1, 53) : null;
}

function notifyPost(w) {
  if (w.kind !== "set" || w.author !== w.namespace || w.value === null) return null;
  const p = w.value;
  const id = w.key.slice("chirp/posts/".length);
  const from = `/${w.namespace}/${w.key}`;
  const text = typeof p.text === "string" ? p.text : undefined;
  const told = new Set();
  for (const [field, type] of [["reply_to", "reply"], ["quote_of", "quote"], ["repost_of", "repost"]]) {
    const target = ownerOf(p[field]);
    if (target === null || told.has(target)) continue;
    told.add(target);
    notify(w, target, `${type}-${id}`, { type, from, post: p[field], text, at: p.at });
  }
  for (const pk of p.mentions || []) {
    if (told.has(pk)) continue;
    told.add(pk);
    notify(w, pk, `mention-${id}`, { type: "mention", from, text, at: p.at });
  }
  return null;
}

function notifyLike(w) {
  if (w.kind !== "set" || w.author !== w.namespace || w.value === null) return null;
  const target = ownerOf(w.value.post);
  if (target === null) return null;
  const name = w.key.slice("chirp/likes/".length);
  notify(w, target, `like-${name}`.slice(0, 80), {
    type: "like", from: `/${w.namespace}/${w.key}`, post: w.value.post, at: w.value.at,
  });
  return null;
}

function notifyFollow(w) {
  if (w.kind !== "set" || w.author !== w.namespace || w.value === null) return null;
  const target = w.key.slice("chirp/follows/".length);
  notify(w, target, "follow", { type: "follow", from: `/${w.namespace}/${w.key}`, at: w.value.at });
  return null;
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
function validateNotice(op, current) { return refusing(checkNotice, op, current); }
