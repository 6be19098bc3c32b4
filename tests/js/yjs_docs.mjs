// Prints real Yjs updates (base64, one per line) built with the JS `yjs` package, for the Python
// tests: `node yjs_docs.mjs prosemirror` writes a ProseMirror/TipTap-shaped document (an
// XmlFragment 'default' holding <paragraph> elements with XmlText in them), then a later edit
// of it as a second update.
import * as Y from "yjs";

function prosemirror() {
  const doc = new Y.Doc();
  const out = [];
  doc.on("update", (u) => out.push(Buffer.from(u).toString("base64")));
  const frag = doc.getXmlFragment("default");
  doc.transact(() => {
    const p = new Y.XmlElement("paragraph");
    p.setAttribute("textAlign", "left");
    const t = new Y.XmlText();
    t.insert(0, "Hello ");
    t.insert(6, "world", { bold: true });
    p.insert(0, [t]);
    const h = new Y.XmlElement("heading");
    h.setAttribute("level", "1");
    h.insert(0, [new Y.XmlText("Title")]);
    frag.insert(0, [h, p]);
  });
  doc.transact(() => {
    const p = new Y.XmlElement("paragraph");
    p.insert(0, [new Y.XmlText("second")]);
    frag.insert(2, [p]);
  });
  return out;
}

const docs = { prosemirror };
const which = process.argv[2] ?? "prosemirror";
for (const line of docs[which]()) console.log(line);
