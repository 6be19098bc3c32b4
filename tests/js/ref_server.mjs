// Reference Braid-HTTP server built on braid-http's OWN server code (`braidify`).
//
// It documents the behaviour our Python server must match on the wire, and lets
// tests/test_harness.py prove that braid_client.mjs works before it is pointed at statebus.
//
//   node ref_server.mjs [--host 127.0.0.1] [--port 0]
//
// Prints one line `{"port": N}` on stdout once listening. State is in memory: every URL path is
// a key holding a JSON value and a linear history of updates.
//
//   GET  /k                     -> 200 + Version + JSON body (404 if never written)
//   GET  /k  Subscribe          -> 209; first update = snapshot (or, with Parents, only the
//                                  updates after them), then every later PUT, live
//   PUT  /k  [Version] [Parents] body            -> snapshot
//   PUT  /k  Content-Range: json .a              -> one patch
//   PUT  /k  Patches: N                          -> N patches
//   A PUT whose Version is already known is acknowledged and ignored (idempotent).

import http from 'node:http'
import braid from 'braid-http'

const braidify = braid.http_server

function arg(name, fallback) {
    const i = process.argv.indexOf(name)
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

// key -> {value, history: [{version, parents, body?, patches?}], subscribers: Set<res>}
const resources = new Map()
let minted = 0

function resource(key) {
    if (!resources.has(key))
        resources.set(key, {value: undefined, history: [], subscribers: new Set()})
    return resources.get(key)
}

// --- JSON range patches: `.a`, `.a.b`, `[3]`, `["key"]`, `[i:j]` (statebus / Braid D4 syntax) ---

function parse_range(range) {
    const path = []
    const re = /\.([A-Za-z_$][\w$]*)|\[(-?\d+)\]|\[(-?\d+):(-?\d+)\]|\[("(?:[^"\\]|\\.)*")\]/y
    let pos = 0
    while (pos < range.length) {
        re.lastIndex = pos
        const m = re.exec(range)
        if (!m) throw new Error(`bad json range ${JSON.stringify(range)} at ${pos}`)
        if (m[1] !== undefined) path.push(m[1])
        else if (m[2] !== undefined) path.push(Number(m[2]))
        else if (m[3] !== undefined) path.push({slice: [Number(m[3]), Number(m[4])]})
        else path.push(JSON.parse(m[5]))
        pos = re.lastIndex
    }
    return path
}

function apply_patch(value, {unit, range, content}) {
    if (unit !== 'json') throw new Error(`unsupported unit ${unit}`)
    const path = parse_range(range)
    const new_val = content === '' ? undefined : JSON.parse(content)
    if (path.length === 0) return new_val
    const root = structuredClone(value)
    let obj = root
    for (const step of path.slice(0, -1)) {
        if (obj === null || typeof obj !== 'object' || !(step in obj))
            throw new Error(`range ${range} does not exist`)
        obj = obj[step]
    }
    if (obj === null || typeof obj !== 'object') throw new Error(`range ${range} does not exist`)
    const last = path[path.length - 1]
    if (typeof last === 'object') {
        if (!Array.isArray(obj)) throw new Error(`slice on non-array in ${range}`)
        const [i, j] = last.slice.map(n => (n < 0 ? obj.length + n : n))
        obj.splice(i, j - i, ...(new_val === undefined ? [] : [new_val]))
    } else if (new_val === undefined) {
        delete obj[typeof last === 'number' && last < 0 ? obj.length + last : last]
    } else {
        obj[typeof last === 'number' && last < 0 ? obj.length + last : last] = new_val
    }
    return root
}

// --- HTTP handlers ---

function send_json_error(res, status, message) {
    res.statusCode = status
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({error: message}))
}

function snapshot_update(r) {
    const last = r.history[r.history.length - 1]
    return {version: last.version, body: JSON.stringify(r.value)}
}

async function handle_get(req, res, key) {
    const r = resource(key)
    res.setHeader('content-type', 'application/json')
    if (!req.subscribe) {
        if (!r.history.length) return send_json_error(res, 404, `no such key ${key}`)
        res.statusCode = 200
        await res.sendUpdate(snapshot_update(r))
        return res.end()
    }
    res.startSubscription({onClose: () => r.subscribers.delete(res)})
    // Flush the 209 headers now, so the client sees the subscription even before the first update.
    res.flushHeaders()
    if (r.history.length) {
        const known = req.parents ? req.parents.map(p => r.history.findIndex(u => u.version[0] === p)) : []
        if (req.parents && known.every(i => i >= 0)) {
            // Resume: only the updates after the newest parent the client already has.
            for (const u of r.history.slice(Math.max(...known) + 1)) res.sendUpdate(u)
        } else {
            // Fresh subscription, or unknown parents: one snapshot of the current version.
            res.sendUpdate(snapshot_update(r))
        }
    }
    r.subscribers.add(res)
}

async function handle_put(req, res, key) {
    const r = resource(key)
    const update = await req.parseUpdate()
    const version = req.version && req.version.length ? req.version : [`ref-${++minted}`]
    if (r.history.some(u => u.version[0] === version[0])) {
        res.statusCode = 200
        res.setHeader('version', JSON.stringify(version[0]))
        return res.end()
    }
    const frontier = r.history.length ? r.history[r.history.length - 1].version : []
    const parents = req.parents || frontier
    let stored
    try {
        if (update.patches) {
            let value = r.value
            const patches = update.patches.map(p => ({unit: p.unit, range: p.range, content: p.content_text}))
            for (const p of patches) value = apply_patch(value, p)
            r.value = value
            stored = {version, parents, patches}
        } else {
            r.value = JSON.parse(update.body_text)
            stored = {version, parents, body: update.body_text}
        }
    } catch (e) {
        return send_json_error(res, 400, String(e.message || e))
    }
    if (!stored.parents.length) delete stored.parents
    r.history.push(stored)
    for (const sub of r.subscribers) sub.sendUpdate(stored)
    res.statusCode = 200
    res.setHeader('version', version.map(v => JSON.stringify(v)).join(', '))
    res.end()
}

const server = http.createServer(
    braidify(async (req, res) => {
        if (req.is_multiplexer) return
        const key = decodeURIComponent(new URL(req.url, 'http://x').pathname.slice(1))
        try {
            if (req.method === 'GET') return await handle_get(req, res, key)
            if (req.method === 'PUT') return await handle_put(req, res, key)
            send_json_error(res, 405, `method ${req.method} not allowed`)
        } catch (e) {
            send_json_error(res, 500, String(e.message || e))
        }
    }),
)

server.listen(Number(arg('--port', '0')), arg('--host', '127.0.0.1'), () => {
    process.stdout.write(JSON.stringify({port: server.address().port}) + '\n')
})

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
