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
 *   const stop = statebus.subscribe(keyOrKeys, (key, value, event) => {...}, {since, onstatus})
 *                                               live changes over one EventSource; event is
 *                                               {type: 'snapshot'|'update'|'delete'|'reset', version,
 *                                               parents, id}. Reconnects and resumes by itself (no gap, no
 *                                               duplicate); on 'reset' (history gone) it drops its state
 *                                               and fresh snapshots follow (callback(null, undefined,
 *                                               {type: 'reset'})). onstatus('open'|'connecting'|'closed')
 *                                               reports the connection. stop() unsubscribes.
 *   statebus.state[key]                         local cache of every value read or followed, by key
 *                                               ("/~/…" for this node's keys)
 *   await statebus.info()                       {node, owner, version, keys?} of the node
 *   statebus.ready                              a promise of info(); keys are normalised once it resolves
 *
 * Errors reject with an Error whose .status and .code come from the server's {"error", "detail"}.
 */
(function (global) {
    'use strict'
    const statebus = {state: {}, node: null, owner: false}
    const RETRY_MS = 2000

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
        let res
        try {
            res = await request('GET', key, {query: range !== undefined ? {range} : undefined})
        } catch (e) {
            if (e.status === 404) { if (range === undefined) delete statebus.state[norm(key)]; return undefined }
            throw e
        }
        const type = (res.headers.get('content-type') || '').split(';')[0].trim()
        const value = type === 'application/json' ? await res.json() : await res.blob()
        if (range === undefined && !norm(key).endsWith('/')) statebus.state[norm(key)] = value
        return value
    }
    statebus.put = async function (key, value, opts = {}) {
        const res = await request('PUT', key, {
            headers: {'Content-Type': 'application/json', ...versionHeaders(opts)},
            body: JSON.stringify(value),
        })
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
        delete statebus.state[norm(key)]
        return res.json()
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

    statebus.subscribe = function (keys, callback, {since, onstatus = () => {}} = {}) {
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
            if ([...q].length) u += '?' + q
            es = new EventSource(u, {withCredentials: true})
            const on = type => es.addEventListener(type, e => handle(type, e))
            for (const t of ['snapshot', 'update', 'delete', 'reset']) on(t)
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
        async function handle(type, e) {
            const data = JSON.parse(e.data)
            const event = {type, version: data.version, parents: data.parents, id: e.lastEventId}
            if (e.lastEventId) lastId = e.lastEventId
            if (type === 'reset') {
                for (const k of mine.keys()) delete statebus.state[k]
                mine.clear()
                callback(null, undefined, {...event, reason: data.reason})
                return
            }
            const key = norm(data.key)
            let value
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
                statebus.state[key] = value
                mine.set(key, value)
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
