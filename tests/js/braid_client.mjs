// CLI harness around the REAL npm `braid-http` client (braid_fetch), for interop tests.
//
//   node braid_client.mjs <url> [options]
//
// Options (Version/Parents take the header form: '"v1"' or '"a", "b"'):
//   --subscribe              GET with Subscribe: true and print every update received
//   --parents '"v1"'         Parents header (with --subscribe: resume after these versions)
//   --version '"x"'          Version header (on a PUT: the new version; on a GET: fetch that version)
//   --heartbeats 0.5         ask for heartbeats every 0.5 s (braid_fetch then errors if they stop)
//   --peer ID                Peer header
//   --header 'Name: value'   extra request header (repeatable)
//   --max-updates N          stop after N updates (subscribe mode)
//   --timeout-ms T           stop after T ms (default 10000); an error if --max-updates was not reached
//   --retry                  braid_fetch's retry mode (reconnects a dropped subscription)
//   --put JSON               PUT this body (Content-Type: application/json)
//   --patches JSON           PUT these patches: '[{"unit":"json","range":".a","content":"2"}]';
//                            braid_fetch sends 1 patch as Content-Range and 2+ as Patches: N
//
// Output: one JSON object per line on stdout, each with a "type":
//   {"type":"response","status":209,"headers":{...},"body":null}       once, first
//   {"type":"update","version":[..],"parents":[..],"body":"..."|null,
//    "patches":[{"unit","range","content"}]|null,"status":"200"|null,"extra_headers":{..}|null}
//   {"type":"end","reason":"max-updates"|"timeout"|"complete"}
//   {"type":"error","error":"..."}                                     then exit code 1
// Everything braid-http itself logs goes to stderr, so stdout stays machine-readable.

import braid from 'braid-http'

const braid_fetch = braid.fetch

// braid-http logs with console.log / console.debug ("Connection closed.", "retrying in ..."):
// keep stdout for our JSON lines only.
for (const name of ['log', 'debug', 'info']) console[name] = (...args) => console.error(...args)

function usage(message) {
    emit({type: 'error', error: `usage: ${message}`})
    finish(2)
}

function parse_args(argv) {
    const opts = {headers: {}, timeout_ms: 10000, max_updates: null}
    const take = (i, name) => {
        if (i + 1 >= argv.length) usage(`${name} needs a value`)
        return argv[i + 1]
    }
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i]
        switch (a) {
            case '--subscribe': opts.subscribe = true; break
            case '--retry': opts.retry = true; break
            case '--parents': opts.parents = parse_version_list(take(i, a)); i++; break
            case '--version': opts.version = parse_version_list(take(i, a)); i++; break
            case '--heartbeats': opts.heartbeats = Number(take(i, a)); i++; break
            case '--peer': opts.peer = take(i, a); i++; break
            case '--max-updates': opts.max_updates = Number(take(i, a)); i++; break
            case '--timeout-ms': opts.timeout_ms = Number(take(i, a)); i++; break
            case '--put': opts.put = take(i, a); i++; break
            case '--patches': opts.patches = JSON.parse(take(i, a)); i++; break
            case '--header': {
                const h = take(i, a); i++
                const colon = h.indexOf(':')
                if (colon <= 0) usage(`bad --header ${h}`)
                opts.headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim()
                break
            }
            default:
                if (a.startsWith('--') || opts.url) usage(`unknown argument ${a}`)
                opts.url = a
        }
    }
    if (!opts.url) usage('node braid_client.mjs <url> [--subscribe] [--parents ...] ...')
    return opts
}

// '"a", "b"' -> ['a', 'b'], exactly as braid-http's own server parses these headers.
function parse_version_list(text) {
    return JSON.parse('[' + text + ']')
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n')
}

let finished = false
const aborter = new AbortController()

function finish(code) {
    if (finished) return
    finished = true
    aborter.abort()
    // Exit once stdout has drained (it may be a pipe).
    process.stdout.write('', () => process.exit(code))
}

function fail(err) {
    if (finished) return
    emit({type: 'error', error: String(err && err.message ? err.message : err)})
    finish(1)
}

function headers_object(headers) {
    const out = {}
    headers.forEach((value, name) => { out[name] = value })
    return out
}

function update_json(update) {
    return {
        type: 'update',
        version: update.version ?? null,
        parents: update.parents ?? null,
        body: update.body !== undefined ? update.body_text : null,
        patches: update.patches
            ? update.patches.map(p => ({unit: p.unit, range: p.range, content: p.content_text}))
            : null,
        status: update.status ?? null,
        extra_headers: update.extra_headers ?? null,
    }
}

async function main() {
    const opts = parse_args(process.argv.slice(2))
    let updates = 0

    setTimeout(() => {
        if (opts.subscribe && opts.max_updates !== null)
            fail(`timeout after ${opts.timeout_ms} ms: got ${updates} of ${opts.max_updates} updates`)
        else if (opts.subscribe) {
            emit({type: 'end', reason: 'timeout'})
            finish(0)
        } else fail(`timeout after ${opts.timeout_ms} ms`)
    }, opts.timeout_ms).unref()

    const params = {headers: opts.headers, signal: aborter.signal}
    for (const k of ['version', 'parents', 'peer', 'heartbeats', 'subscribe', 'retry', 'patches'])
        if (opts[k] !== undefined) params[k] = opts[k]
    if (opts.put !== undefined || opts.patches !== undefined) {
        params.method = 'PUT'
        if (opts.put !== undefined) {
            params.body = opts.put
            params.headers['content-type'] ??= 'application/json'
        }
    }

    const res = await braid_fetch(opts.url, params)
    const first = {type: 'response', status: res.status, headers: headers_object(res.headers), body: null}
    if (!opts.subscribe || res.status !== 209) {
        first.body = await res.text()
        emit(first)
        if (opts.subscribe)
            return fail(`Got unexpected subscription status code: ${res.status}. Expected 209.`)
        emit({type: 'end', reason: 'complete'})
        return finish(0)
    }
    emit(first)
    if (opts.max_updates === 0) {
        emit({type: 'end', reason: 'max-updates'})
        return finish(0)
    }
    res.subscribe(
        update => {
            if (finished) return
            emit(update_json(update))
            updates++
            if (opts.max_updates !== null && updates >= opts.max_updates) {
                emit({type: 'end', reason: 'max-updates'})
                finish(0)
            }
        },
        err => fail(err),
    )
}

main().catch(fail)
