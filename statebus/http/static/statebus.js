/* statebus.js: the browser client of a statebus node. No build step, no dependencies:
 *
 *     <script src="/statebus.js"></script>
 *
 * Keys: "/~/notes/1" (this node's namespace), "/<pubkey>/notes/1", or a bare "notes/1" (= "/~/notes/1").
 * A key ending in "/" is a subtree. Requests are same-origin with credentials, so the login cookie that
 * `GET /login?token=…` sets (the link `statebus serve` prints) makes them the owner's.
 *
 *   await statebus.get(key, {range})            the value (undefined if the key does not exist);
 *                                               a subtree gives {key, children, next}
 *   await statebus.put(key, value, {version, parents})    → {version: [own], frontier: [...], seq}
 *   await statebus.patch(key, range, content)   replace part of a JSON value (content undefined removes)
 *   await statebus.delete(key)
 *   const stop = statebus.subscribe(keyOrKeys, (key, value, event) => {...}, {since, onstatus, verify})
 *                                               live changes over one EventSource; event is
 *                                               {type: 'snapshot'|'update'|'delete'|'reset', version,
 *                                               parents, id}. Reconnects and resumes by itself (no gap, no
 *                                               duplicate); on 'reset' (history gone) it drops its state
 *                                               and fresh snapshots follow (callback(null, undefined,
 *                                               {type: 'reset'})). onstatus('open'|'connecting'|'closed')
 *                                               reports the connection. stop() unsubscribes.
 *                                               verify: true asks for each value's signature material
 *                                               (?proof) and calls back only once it is checked, with
 *                                               event.verified (true|false) and event.reason; a value
 *                                               that fails is passed flagged, never put in statebus.state.
 *                                               event.signer is the key whose Ed25519 signature over this
 *                                               very value was checked (null if none), also when the
 *                                               value fails for not being the owner's: a guest's signed
 *                                               write, such as a notice in an inbox.
 *   statebus.state[key]                         local cache of every value read or followed, by key
 *                                               ("/~/…" for this node's keys)
 *   await statebus.getVerified(key)             {value, verified: true|false, reason, author}: the value with
 *                                               its signature material (GET ?proof), checked here: the
 *                                               author's Ed25519 signature (WebCrypto) over the bytes it
 *                                               signed, and the owner's delegation if the author is not the
 *                                               owner. A value that fails is never put in statebus.state.
 *   await statebus.getVerifiedBytes(key)        {blob, type, verified, reason, author}: a bytes value (or
 *                                               a blob) and its signature material, checked here: the
 *                                               author signed these very bytes (or, for a blob, their
 *                                               sha256 and size). Show blob only when verified.
 *   await statebus.verifyProof(key, value, proof)   the same check on a {key, value, proof} from elsewhere
 *                                               (value: JSON, or a Uint8Array of a bytes value)
 *   statebus.verified[key]                      {verified, reason, author, signer} of the last check of each key
 *   statebus.ed25519                            'webcrypto', or 'noble' once the vendored fallback is used
 *   await statebus.info()                       {node, owner, version, keys?} of the node
 *   statebus.ready                              a promise of info(); keys are normalised once it resolves
 *
 * Errors reject with an Error whose .status and .code come from the server's {"error", "detail"}.
 */
(function (global) {
    'use strict'
    const statebus = {state: {}, node: null, owner: false}
    const RETRY_MS = 2000
    // Writes to statebus.state by key (a put, a delete, a stream's event): a read answered after one of
    // them may be older than what it wrote, so it leaves statebus.state alone (a stale value never wins).
    const writes = {}
    const wrote = key => { writes[key] = (writes[key] || 0) + 1 }

    // ------------------------------------------------------------------ keys

    function norm(key) {
        if (typeof key !== 'string' || !key) throw new TypeError('a key is a non-empty string')
        if (!key.startsWith('/')) key = key === '~' || key.startsWith('~/') ? '/' + key : '/~/' + key
        if (statebus.node && key.startsWith('/' + statebus.node + '/'))
            key = '/~' + key.slice(statebus.node.length + 1)
        return key
    }
    function url(key) {
        return norm(key).split('/').map(encodeURIComponent).join('/').replace(/^\/%7E\//, '/~/')
    }

    // ------------------------------------------------------------------ requests

    async function request(method, key, {headers = {}, body, query} = {}) {
        let u = url(key)
        if (query) u += '?' + new URLSearchParams(query)
        const res = await fetch(u, {method, headers, body, credentials: 'same-origin', cache: 'no-store'})
        if (res.ok) return res
        let detail = res.statusText, code = ''
        try { const e = await res.json(); detail = e.detail || detail; code = e.error || '' } catch (e) {}
        const err = new Error(detail)
        err.status = res.status
        err.code = code
        throw err
    }
    function versionHeaders({version, parents} = {}) {
        const h = {}
        if (version !== undefined) h['Version'] = JSON.stringify(String(version))
        if (parents !== undefined) h['Parents'] = [].concat(parents).map(p => JSON.stringify(String(p))).join(', ')
        return h
    }

    statebus.info = async function () {
        const res = await fetch('/.well-known/statebus', {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) throw new Error('no statebus info at /.well-known/statebus (HTTP ' + res.status + ')')
        const info = await res.json()
        statebus.node = info.node
        statebus.owner = !!info.owner
        return info
    }
    statebus.ready = statebus.info().catch(e => ({error: String(e)}))

    statebus.get = async function (key, {range} = {}) {
        const seen = writes[norm(key)]
        let res
        try {
            res = await request('GET', key, {query: range !== undefined ? {range} : undefined})
        } catch (e) {
            if (e.status === 404) {
                if (range === undefined && writes[norm(key)] === seen) delete statebus.state[norm(key)]
                return undefined
            }
            throw e
        }
        const type = (res.headers.get('content-type') || '').split(';')[0].trim()
        const value = type === 'application/json' ? await res.json() : await res.blob()
        const fresh = writes[norm(key)] === seen          // not written meanwhile: else this read is older
        if (range === undefined && !norm(key).endsWith('/') && fresh) statebus.state[norm(key)] = value
        return value
    }
    statebus.put = async function (key, value, opts = {}) {
        const res = await request('PUT', key, {
            headers: {'Content-Type': 'application/json', ...versionHeaders(opts)},
            body: JSON.stringify(value),
        })
        wrote(norm(key))
        statebus.state[norm(key)] = value
        return res.json()
    }
    statebus.patch = async function (key, range, content, opts = {}) {
        const res = await request('PATCH', key, {
            headers: {'Content-Range': 'json ' + range, 'Content-Type': 'application/json', ...versionHeaders(opts)},
            body: content === undefined ? '' : JSON.stringify(content),
        })
        return res.json()
    }
    statebus.delete = async function (key, opts = {}) {
        const res = await request('DELETE', key, {headers: versionHeaders(opts)})
        wrote(norm(key))
        delete statebus.state[norm(key)]
        return res.json()
    }

    // ------------------------------------------------------------------ verification (docs/wire-protocol.md, "Proofs")

    statebus.verified = {}
    statebus.ed25519 = 'webcrypto'
    const OP_DOMAIN = 'statebus-op-v1\n', COMMIT_DOMAIN = 'statebus-commit-v1\n'
    const enc = new TextEncoder()
    const b64 = s => Uint8Array.from(atob(s), c => c.charCodeAt(0))
    function b32(text) {                  // a 52-character public key → its 32 bytes (RFC 4648, lower case)
        const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
        if (!/^[a-z2-7]{52}$/.test(text)) throw new Error('not a public key: ' + text)
        const out = new Uint8Array(32)
        let bits = 0, acc = 0, n = 0
        for (const c of text) {
            acc = (acc << 5) | alphabet.indexOf(c)
            bits += 5
            if (bits >= 8) { bits -= 8; if (n < 32) out[n++] = (acc >> bits) & 255 }
        }
        return out
    }
    const concat = (...parts) => {
        const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
        let at = 0
        for (const p of parts) { out.set(p, at); at += p.length }
        return out
    }
    const sha256 = async bytes => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
    const publicKeys = new Map()
    const NOBLE = '/static/vendor/noble-ed25519-3.2.0.js'    // @noble/ed25519, pinned (vendor/README.md)
    let noble = null                     // the fallback, loaded once if WebCrypto has no Ed25519
    async function ed25519(author, message, sig) {
        if (!(global.crypto && crypto.subtle)) throw new Error('this page has no WebCrypto (not a secure context?)')
        if (!noble) {
            let key = publicKeys.get(author)
            try {
                if (!key) {
                    key = await crypto.subtle.importKey('raw', b32(author), {name: 'Ed25519'}, false, ['verify'])
                    publicKeys.set(author, key)
                }
                return await crypto.subtle.verify({name: 'Ed25519'}, key, sig, message)
            } catch (e) {
                if (key) throw e
                noble = import(NOBLE)            // no Ed25519 here: the vendored implementation
                statebus.ed25519 = 'noble'
            }
        }
        return (await noble).verifyAsync(sig, message, b32(author), {zip215: false})
    }
    async function signatureOk(author, signed, sig) {
        if (sig.length === 64) return ed25519(author, signed, sig)
        // a batch proof: "C1" | commit signature (64) | n (u32 BE) | i (u32 BE) | Merkle siblings (32 each)
        if (sig.length < 74 || sig[0] !== 0x43 || sig[1] !== 0x31 || (sig.length - 74) % 32) return false
        const view = new DataView(sig.buffer, sig.byteOffset, sig.byteLength)
        const n = view.getUint32(66), i0 = view.getUint32(70)
        if (!(i0 < n)) return false
        let h = await sha256(concat(new Uint8Array([0]), await sha256(signed)))
        let i = i0, width = n, at = 74
        while (width > 1) {
            if ((i ^ 1) < width) {
                if (at + 32 > sig.length) return false
                const s = sig.subarray(at, at + 32)
                at += 32
                h = await sha256(i % 2 === 0 ? concat(new Uint8Array([1]), h, s) : concat(new Uint8Array([1]), s, h))
            }
            i = Math.floor(i / 2)
            width = Math.floor((width + 1) / 2)
        }
        if (at !== sig.length) return false
        const count = new Uint8Array(4)
        new DataView(count.buffer).setUint32(0, n)
        const message = concat(enc.encode(COMMIT_DOMAIN), count, h), commitSig = sig.subarray(2, 66)
        // one commit signs a whole batch: its signature is checked once per author, commit and signature
        // (the verdict depends on nothing else); an error is not kept
        const id = author + ':' + btoa(String.fromCharCode(...message, ...commitSig))
        let ok = commits.get(id)
        if (ok === undefined) {
            ok = ed25519(author, message, commitSig)
            commits.set(id, ok)
            if (commits.size > 4096) commits.delete(commits.keys().next().value)
            ok.catch(() => commits.delete(id))
        }
        return ok
    }
    const commits = new Map()            // author:commit message+signature → promise of the verdict
    function signedOp(b64text) {
        const bytes = b64(b64text)
        const text = new TextDecoder().decode(bytes)
        if (!text.startsWith(OP_DOMAIN)) throw new Error('the signed bytes are not an op')
        return {bytes, op: JSON.parse(text.slice(OP_DOMAIN.length))}
    }
    function canonical(v) {
        if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']'
        if (v && typeof v === 'object')
            return '{' + Object.keys(v).sort().map(k => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}'
        return JSON.stringify(v)
    }
    function fullKey(key) {
        key = norm(key)
        return key.startsWith('/~/') && statebus.node ? '/' + statebus.node + key.slice(2) : key
    }
    // A bytes value (a single PUT of bytes) is signed as its bytes (base64 "bb"); a blob as a pointer
    // {"hash", "size", "type"} with the sha256 of its bytes (content type BLOB_TYPE).
    const BLOB_TYPE = 'application/vnd.statebus.blob+json'
    async function bytesDiffer(op, bytes) {
        if (op.bb === undefined) return 'the signed op sets a JSON value, not bytes'
        const body = b64(op.bb)
        if (op.ct === BLOB_TYPE) {
            let p
            try { p = JSON.parse(new TextDecoder().decode(body)) } catch (e) { return 'the signed blob pointer is malformed' }
            if (p.size !== bytes.length) return 'the bytes are ' + bytes.length + ' long; their author signed ' + p.size
            const h = [...await sha256(bytes)].map(b => b.toString(16).padStart(2, '0')).join('')
            return h === p.hash ? null : 'the bytes differ from the ones their author signed (sha256)'
        }
        if (body.length !== bytes.length || body.some((b, i) => b !== bytes[i])) return 'the bytes differ from the ones their author signed'
        return null
    }
    async function check(key, value, proof, now, seen = {}) {
        if (!proof) return 'no signature material came with the value'
        if (proof.unverifiable) return proof.unverifiable
        const {bytes, op} = signedOp(proof.signed)
        if (op.k !== key) return 'the signed op is for ' + op.k + ', not ' + key
        if (op.a !== proof.author) return 'the signed op is by ' + op.a + ', not ' + proof.author
        if (op.t !== 'set' || op.m !== 'lww') return 'the signed op does not set a whole value'
        if (value instanceof Uint8Array) {
            const why = await bytesDiffer(op, value)
            if (why) return why
        } else if (op.bb !== undefined) return 'the signed op sets bytes, not a JSON value'
        else if (canonical(op.b) !== canonical(value)) return 'the value differs from the one its author signed'
        if (!await signatureOk(op.a, bytes, b64(proof.sig))) return 'the signature does not verify for ' + op.a
        seen.signer = op.a   // this key signed this very value, whether or not it may write here
        const owner = key.split('/')[1]
        if (op.a === owner) return null
        const d = proof.delegation
        if (!d) return op.a + ' is not the owner of ' + owner + ' and no delegation came with the value'
        const rec = signedOp(d.signed)
        if (rec.op.a !== owner || rec.op.k !== '/' + owner + '/.keys/' + op.a) return 'the delegation record is not the owner\'s record of ' + op.a
        if (!await signatureOk(owner, rec.bytes, b64(d.sig))) return 'the delegation record\'s signature does not verify for ' + owner
        const body = rec.op.b || {}
        if (body.type !== 'statebus/delegation' || body.owner !== owner || body.delegate !== op.a) return 'the owner revoked ' + op.a + ' or the record is not a delegation'
        if (!(body.scopes || []).some(s => key.startsWith(s))) return 'the delegation of ' + op.a + ' does not cover ' + key
        if (typeof body.not_before === 'number' && body.not_before > now + 120) return 'the delegation of ' + op.a + ' is not in force yet'
        if (typeof body.expires === 'number' && body.expires <= now) return 'the delegation of ' + op.a + ' expired'
        return null
    }
    statebus.verifyProof = async function (key, value, proof) {
        await statebus.ready
        key = fullKey(key)
        let reason
        const seen = {}
        try {
            reason = await check(key, value, proof, Date.now() / 1000, seen)
        } catch (e) {
            reason = 'the signature material is malformed or cannot be checked: ' + e.message
        }
        const author = proof && proof.author
        const signer = seen.signer || null
        const result = reason === null
            ? {verified: true, reason: 'signed by ' + author + (author === key.split('/')[1] ? ' (the owner)' : ' (a delegate of the owner)'), author, signer}
            : {verified: false, reason, author, signer}
        statebus.verified[norm(key)] = result
        return result
    }
    statebus.getVerified = async function (key) {
        await statebus.ready
        const seen = writes[norm(key)]
        let res
        try {
            res = await request('GET', key, {query: {proof: ''}})
        } catch (e) {
            if (e.status === 404) return {value: undefined, verified: false, reason: 'no such key'}
            throw e
        }
        const data = await res.json()
        const result = await statebus.verifyProof(key, data.value, data.proof)
        if (writes[norm(key)] === seen) {       // not written meanwhile (by a put, the stream): else this read is older
            if (result.verified) statebus.state[norm(key)] = data.value
            else delete statebus.state[norm(key)]   // never kept as the author's
        }
        return {value: data.value, ...result}
    }

    statebus.getVerifiedBytes = async function (key) {
        await statebus.ready
        for (let attempt = 0; ; attempt++) {
            let res, proved
            try {
                [res, proved] = await Promise.all([request('GET', key), request('GET', key, {query: {proof: ''}})])
            } catch (e) {
                if (e.status === 404) return {blob: undefined, verified: false, reason: 'no such key'}
                throw e
            }
            const type = (res.headers.get('content-type') || '').split(';')[0].trim()
            const bytes = new Uint8Array(await res.arrayBuffer())
            const data = await proved.json()
            const result = await statebus.verifyProof(key, bytes, data.proof)
            // the two reads may straddle a write: read both again once before calling it a mismatch
            if (!result.verified && attempt === 0) continue
            return {blob: new Blob([bytes], {type}), type, ...result}
        }
    }

    // ------------------------------------------------------------------ patches (as the server applies them)

    function parseRange(r) {
        const out = []
        if (r.startsWith('/')) {
            for (const p of r.slice(1).split('/')) out.push({field: p.replace(/~1/g, '/').replace(/~0/g, '~')})
            return out
        }
        const re = /\.?([^.\[\]\s]+)|\[\s*("(?:[^"\\]|\\.)*")\s*\]|\[\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?\]/y
        let m
        while (re.lastIndex < r.length) {
            const at = re.lastIndex
            if (!(m = re.exec(r)) || re.lastIndex === at) throw new Error('range not understood: ' + r)
            if (m[1] !== undefined) out.push({field: m[1]})
            else if (m[2] !== undefined) out.push({field: JSON.parse(m[2])})
            else if (m[4] !== undefined) out.push({slice: [m[3], m[4]]})
            else out.push({index: m[3]})
        }
        return out
    }
    function pos(text, len) { return text.startsWith('-') ? len - Number(text.slice(1)) : Number(text) }
    function applyPatch(value, range, content) {
        const segs = parseRange(range)
        if (!segs.length) return content
        const root = structuredClone(value)
        let parent = root
        for (const s of segs.slice(0, -1)) {
            const k = s.field !== undefined ? (Array.isArray(parent) && s.field === '-' ? parent.length : s.field)
                : pos(s.index, parent.length)
            if (parent === null || typeof parent !== 'object' || !(k in parent)) throw new Error('no ' + range)
            if (typeof parent[k] === 'string' && s === segs[segs.length - 2]) {
                parent[k] = applyPatch(parent[k], range.slice(range.lastIndexOf('[')), content)
                return root
            }
            parent = parent[k]
        }
        const last = segs[segs.length - 1]
        const isStr = typeof parent === 'string'
        if (isStr) throw new Error('string edits at the root are not handled here')
        if (last.slice) {
            const a = pos(last.slice[0], parent.length), b = pos(last.slice[1], parent.length)
            parent.splice(a, b - a, ...(content === undefined ? [] : content))
        } else {
            let k = last.field !== undefined ? last.field : pos(last.index, parent.length)
            if (Array.isArray(parent)) {
                if (k === '-') k = parent.length
                k = Number(k)
                if (content === undefined) parent.splice(k, 1)
                else parent[k] = content
            } else if (content === undefined) delete parent[k]
            else parent[k] = content
        }
        return root
    }
    statebus.applyPatch = applyPatch

    // ------------------------------------------------------------------ subscriptions

    statebus.subscribe = function (keys, callback, {since, onstatus = () => {}, verify = false} = {}) {
        const list = [].concat(keys)
        let es = null, stopped = false
        const mine = new Map()       // this subscription's own values (patches apply to these, so two
                                     // subscriptions covering one key never apply a patch twice)
        let lastId
        const open = async () => {
            await statebus.ready
            if (stopped) return
            const [first, ...rest] = list.map(norm)
            let u = url(first)
            const q = new URLSearchParams()
            if (rest.length) q.set('keys', rest.join(','))
            if (since !== undefined) q.set('since', String(since))
            if (verify) q.set('proof', '')
            if ([...q].length) u += '?' + q
            es = new EventSource(u, {withCredentials: true})
            const on = type => es.addEventListener(type, e => handle(type, e))
            for (const t of ['snapshot', 'update', 'delete', 'reset', 'proof']) on(t)
            es.addEventListener('open', () => onstatus('open'))
            es.addEventListener('error', e => {
                onstatus(es.readyState === EventSource.CLOSED ? 'closed' : 'connecting')
                if (e.data) console.warn('statebus: stream cut off:', e.data)   // the server's error event
                // EventSource retries by itself (sending Last-Event-ID) unless the server answered with an
                // error status; then it gives up, and we reopen it, resuming after the last event we saw.
                if (es.readyState === EventSource.CLOSED && !stopped) {
                    es = null
                    if (lastId !== undefined) since = lastId
                    setTimeout(open, RETRY_MS)
                }
            })
        }
        const waiting = new Map()   // verify: key → {value, event, v} until its proof comes
        const proofs = new Map()    // verify: key → {v, proof} that came before its value
        async function settle(key, value, event, proof) {
            const result = await statebus.verifyProof(key, value, proof)
            wrote(key)
            if (result.verified) statebus.state[key] = value
            else delete statebus.state[key]            // never kept as the author's
            callback(key, value, {...event, verified: result.verified, reason: result.reason, signer: result.signer})
        }
        async function handle(type, e) {
            const data = JSON.parse(e.data)
            if (type === 'proof') {
                const key = norm(data.key), v = JSON.stringify(data.version)
                const w = waiting.get(key)
                if (w && w.v === v) { waiting.delete(key); await settle(key, w.value, w.event, data.proof) }
                else proofs.set(key, {v, proof: data.proof})
                return
            }
            const event = {type, version: data.version, parents: data.parents, id: e.lastEventId}
            if (e.lastEventId) lastId = e.lastEventId
            if (type === 'reset') {
                for (const k of mine.keys()) { wrote(k); delete statebus.state[k] }
                mine.clear()
                callback(null, undefined, {...event, reason: data.reason})
                return
            }
            const key = norm(data.key)
            let value
            wrote(key)
            if (data.deleted) {
                delete statebus.state[key]
                mine.delete(key)
            } else {
                if ('value' in data) value = data.value
                else if ('value_base64' in data) value = Uint8Array.from(atob(data.value_base64), c => c.charCodeAt(0))
                else {
                    try {
                        value = data.patches.reduce((v, p) => applyPatch(v, p[0], p.length > 1 ? p[1] : undefined),
                                                    mine.get(key))
                    } catch (err) {
                        value = await statebus.get(key)    // fall back to reading the whole value
                    }
                }
                mine.set(key, value)
                if (verify) {
                    const v = JSON.stringify(data.version), p = proofs.get(key)
                    proofs.delete(key)
                    if (p && p.v === v) await settle(key, value, event, p.proof)
                    else waiting.set(key, {value, event, v})
                    return
                }
                statebus.state[key] = value
            }
            callback(key, value, event)
        }
        open()
        return function unsubscribe() {
            stopped = true
            if (es) es.close()
        }
    }

    global.statebus = statebus
})(typeof window !== 'undefined' ? window : globalThis)
