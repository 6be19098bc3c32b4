// A Yjs client of a statebus node, built on the real JS `yjs` package (and `y-websocket`'s stock
// WebsocketProvider), for the Python tests. Prints one JSON line with what it ended up with.
//
//   node yjs_client.mjs get <url> [--token T] [--base B64]
//       GET the key with Accept: application/vnd.yjs.update (after applying --base, asking only for
//       what its state vector lacks), apply it to a fresh Y.Doc.
//   node yjs_client.mjs sse <url> --count N [--token T]
//       Follow the key's SSE stream with ?yjs=updates, apply N events.
//   node yjs_client.mjs provider <ws-base> <room> --expect TEXT [--token T] [--insert TEXT]
//       Sync a Y.Doc with `new WebsocketProvider(ws-base, room, doc)`, unchanged; append --insert to
//       the text "t" once synced; wait until the text is --expect.
// Output: {"text": <doc.getText("t")>, "update": <base64 Y.encodeStateAsUpdate>, "sv": <base64
// Y.encodeStateVector>, ...}; on failure {"error": "..."} and exit code 1.
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

const YJS = "application/vnd.yjs.update";
const [command, ...rest] = process.argv.slice(2);
const opts = { positional: [] };
for (let i = 0; i < rest.length; i++) {
  if (rest[i].startsWith("--")) opts[rest[i].slice(2)] = rest[++i];
  else opts.positional.push(rest[i]);
}
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64"));
const auth = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};

function report(doc, extra = {}) {
  console.log(
    JSON.stringify({
      text: doc.getText("t").toString(),
      update: b64(Y.encodeStateAsUpdate(doc)),
      sv: b64(Y.encodeStateVector(doc)),
      ...extra,
    }),
  );
}

async function get() {
  const doc = new Y.Doc();
  const headers = { Accept: YJS, ...auth };
  if (opts.base) {
    Y.applyUpdate(doc, unb64(opts.base));
    headers["State-Vector"] = b64(Y.encodeStateVector(doc));
  }
  const r = await fetch(opts.positional[0], { headers });
  if (r.status !== 200) throw new Error(`GET ${r.status}: ${await r.text()}`);
  const body = new Uint8Array(await r.arrayBuffer());
  Y.applyUpdate(doc, body);
  report(doc, { received: body.length, version: r.headers.get("version"), type: r.headers.get("content-type") });
}

async function sse() {
  const doc = new Y.Doc();
  const url = new URL(opts.positional[0]);
  url.searchParams.set("yjs", "updates");
  const r = await fetch(url, { headers: { Accept: "text/event-stream", ...auth } });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const sizes = [];
  let left = Number(opts.count ?? 1);
  while (left > 0) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    buffer += decoder.decode(value, { stream: true });
    let end;
    while (left > 0 && (end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").find((line) => line.startsWith("data: "));
      if (!data) continue;
      const event = JSON.parse(data.slice(6));
      const update = unb64(event.yjs_update);
      sizes.push(update.length);
      Y.applyUpdate(doc, update);
      left--;
      console.log(JSON.stringify({ event: true, text: doc.getText("t").toString() }));
    }
  }
  await reader.cancel();
  report(doc, { sizes });
}

async function provider() {
  const [base, room] = opts.positional;
  const doc = new Y.Doc();
  const params = opts.token ? { token: opts.token } : {};
  const p = new WebsocketProvider(base, room, doc, { params, WebSocketPolyfill: globalThis.WebSocket });
  const denied = [];
  const origWarn = console.warn;
  console.warn = (...args) => denied.push(args.join(" "));
  const deadline = Date.now() + Number(opts["timeout-ms"] ?? 10000);
  const closes = [];
  p.on("connection-close", (event) => closes.push(event?.code ?? null));
  while (!p.synced) {
    if (Date.now() > deadline) {
      console.warn = origWarn;
      console.log(JSON.stringify({ synced: false, closes }));
      p.destroy();
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  if (opts.insert) {
    const text = doc.getText("t");
    text.insert(text.length, opts.insert);
  }
  while (doc.getText("t").toString() !== opts.expect) {
    if (Date.now() > deadline) throw new Error(`text is ${JSON.stringify(doc.getText("t").toString())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, Number(opts.linger ?? 0)));
  console.warn = origWarn;
  report(doc, { denied, synced: true });
  p.destroy();
}

const commands = { get, sse, provider };
try {
  await commands[command]();
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.stack ?? err) }));
  process.exit(1);
}
