// The node page's data browser: what page.js's key tree and value pane do not, through the public HTTP
// API only (the same requests any client makes, with the owner's login cookie):
//   * the selected value rendered by its content type: JSON, text, an image, or a download;
//   * its history (GET <key>?history) and any past version (GET <key>?version=<v>);
//   * delete, with the node's reason when it refuses;
//   * follow a subtree (PUT /~/.follows/<id>, as `statebus follow` does; the form is filled from
//     #follow=<pattern>&via=<url>, the link an app such as chirp gives) and unfollow (DELETE);
//   * the follows and their state (/~/.follows/, /~/.federation/follows/, read from one subscription to the four subtrees), what is shared with every
//     peer (/~/.shares/), the access rules (/~/.acl/), and the node's record as peers read it
//     (/.well-known/statebus/node); all live (the follows and rules are subscribed);
//   * the joins this node runs with invite links (GET /.well-known/statebus/invites/joins): the app's
//     bundle as it arrives (bytes of total) and each step, read every 2 s (0.3 s while one runs);
//   * the node's DHT record as published (GET /.well-known/statebus/dht, read again every 5 s) and a
//     lookup of another public key's record (GET /.well-known/statebus/dht/<pubkey>).
// Everything shown is data: textContent only, never HTML.
(function () {
    'use strict'
    const $ = id => document.getElementById(id)
    let current = null

    function href(key) {
        return key.split('/').map(encodeURIComponent).join('/').replace(/^\/%7E\//, '/~/')
    }
    async function problem(res) {
        let detail = res.statusText
        try { const e = await res.json(); detail = (e.error ? e.error + ': ' : '') + (e.detail || '') } catch (e) {}
        return `HTTP ${res.status} ${detail}`
    }
    function status(text, ok) {
        $('key-status').textContent = text
        $('key-status').className = 'status ' + (ok ? 'ok' : 'error')
    }

    // A value by its content type. JSON is already in page.js's <pre>; others get a view of their own.
    async function rendered(key, into, query = '') {
        into.textContent = ''
        const res = await fetch(href(key) + query, {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) { into.textContent = await problem(res); return null }
        const type = (res.headers.get('content-type') || '').split(';')[0].trim()
        const info = document.createElement('div')
        info.className = 'hint'
        info.textContent = `${type} · version ${res.headers.get('version') || '?'}`
        into.append(info)
        if (type === 'application/json') return res.json()
        if (type.startsWith('image/')) {        // the same URL again (the page's policy allows 'self' images)
            const img = document.createElement('img')
            img.alt = key
            img.src = href(key) + query
            into.append(img)
        } else if (type.startsWith('text/')) {
            const pre = document.createElement('pre')
            pre.textContent = await res.text()
            into.append(pre)
        } else {
            const a = document.createElement('a')
            a.href = href(key) + query
            a.download = key.split('/').pop() || 'value'
            a.textContent = `download (${res.headers.get('content-length') || '?'} bytes)`
            into.append(a)
        }
        return undefined
    }

    let rendering = 0
    async function selected(key, exists) {
        const mine = ++rendering     // a later call (another key, or this one changed) supersedes this one
        if (key !== current) {        // a new key; the same key shown again (it changed) keeps its panes
            $('history').textContent = ''
            $('past').hidden = true
            status('', true)
        }
        current = key
        $('key-actions').hidden = false
        if (!exists) { $('rendered').textContent = ''; return }
        const holder = document.createElement('div')
        await rendered(key, holder).catch(e => { holder.textContent = String(e) })
        if (mine === rendering) $('rendered').replaceChildren(...holder.childNodes)  // never an older read's view
    }

    async function history() {
        const key = current
        const list = $('history')
        list.textContent = ''
        const res = await fetch(href(key) + '?history&limit=1000', {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) { status(await problem(res), false); return }
        const body = await res.json()
        if (body.horizon && body.horizon.seq) {
            const li = document.createElement('li')
            li.textContent = `older versions folded by compaction (up to seq ${body.horizon.seq})`
            list.append(li)
        }
        for (const v of body.versions.slice().reverse()) {       // newest first
            const li = document.createElement('li')
            li.dataset.version = v.version
            li.textContent = `seq ${v.seq} · ${v.kind} · version ${v.version}` +
                (v.parents.length ? ` · parents ${v.parents.join(', ')}` : ' · no parents') +
                ` · by ${String(v.author).slice(0, 8)}… `
            const read = document.createElement('button')
            read.type = 'button'
            read.textContent = 'read'
            read.addEventListener('click', () => past(key, v.version))
            li.append(read)
            list.append(li)
        }
        status(`${body.versions.length} version${body.versions.length === 1 ? '' : 's'}`, true)
    }

    async function past(key, version) {
        $('past').hidden = false
        $('past-version').textContent = version
        const out = $('past-value')
        const holder = document.createElement('div')
        out.textContent = ''
        const value = await rendered(key, holder, '?version=' + encodeURIComponent(version))
        if (value !== undefined && value !== null) out.textContent = JSON.stringify(value, null, 2)
        else out.append(holder)
    }

    $('history-button').addEventListener('click', () => history().catch(e => status(String(e), false)))
    $('delete-button').addEventListener('click', async () => {
        const key = current
        const res = await fetch(href(key), {method: 'DELETE', credentials: 'same-origin'})
        if (!res.ok) { status(await problem(res), false); return }
        status('deleted ' + key, true)
    })

    // ------------------------------------------------------------------ the node: follows, rules

    const follows = new Map(), states = new Map(), rules = new Map()
    function row(cells, classes = []) {
        const tr = document.createElement('tr')
        cells.forEach((c, i) => {
            const td = document.createElement('td')
            td.textContent = c
            if (classes[i]) td.className = classes[i]
            tr.append(td)
        })
        return tr
    }
    let drawing = false
    function draw() {
        if (drawing) return
        drawing = true
        requestAnimationFrame(() => {
            drawing = false
            const body = $('follows-list')
            body.textContent = ''
            for (const [id, f] of [...follows].sort()) {
                const s = states.get(id) || {}
                // how far each follow has come (an invite's follows included): ops applied, blobs on their way
                const tr = row([f.pattern, (s.status || 'starting') + (s.reason ? ': ' + s.reason : ''),
                                s.url || (f.via || []).join(' ') || '–', String(s.applied || 0),
                                String(s.rejected || 0), String(s.blobs_pending || 0)],
                               ['follow-pattern', 'follow-state', 'follow-url', 'follow-applied',
                                'follow-refused', 'follow-blobs'])
                tr.dataset.follow = f.pattern
                const td = document.createElement('td')
                const stop = document.createElement('button')
                stop.type = 'button'
                stop.className = 'danger'
                stop.textContent = 'Unfollow'
                stop.addEventListener('click', () => unfollow(id))
                td.append(stop)
                tr.append(td)
                body.append(tr)
            }
            $('follows-count').textContent = `(${follows.size})`
            const ul = $('rules')
            ul.textContent = ''
            for (const [key, value] of [...rules].sort()) {
                const li = document.createElement('li')
                li.textContent = `${key}  ${JSON.stringify(value)}`
                ul.append(li)
            }
            if (!rules.size) ul.textContent = 'nothing shared; no access rules (everything is private to the owner)'
        })
    }
    const last = key => key.slice(key.lastIndexOf('/') + 1)
    // One subscription for the four subtrees, routed by prefix: a browser keeps at most 6 HTTP/1.1
    // connections per host, and one EventSource per watched subtree (four here, with the page's own
    // and an app's) left none for a PUT, which then waited forever. It names the subtrees (?keys=), not
    // /~/, so a namespace of many keys does not stream all of them here (the key tree lists lazily).
    const routes = [['.follows/', follows], ['.federation/follows/', states], ['.shares/', rules], ['.acl/', rules]]
    function watchNode() {
        statebus.subscribe(routes.map(([prefix]) => '/~/' + prefix), (key, value) => {
            if (key === null) { follows.clear(); states.clear(); rules.clear(); draw(); return }
            const rest = key.replace(/^\/[^/]+\//, '')  // the path after the namespace
            const route = routes.find(([prefix]) => rest.startsWith(prefix) && rest.length > prefix.length)
            if (!route) return
            const map = route[1]
            const name = map === rules ? key : last(key)
            if (value === undefined) map.delete(name)
            else map.set(name, value)
            draw()
        })
    }

    // The record id is the first 16 hex digits of sha256(pattern) (federation/policy.py follow_id).
    async function followId(pattern) {
        const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(pattern))
        return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('').slice(0, 16)
    }
    function followStatus(text, ok) {
        $('follow-status').textContent = text
        $('follow-status').className = 'status ' + (ok ? 'ok' : 'error')
    }
    $('follow-form').addEventListener('submit', async ev => {
        ev.preventDefault()
        let pattern = $('follow-pattern').value.trim()
        if (!pattern.endsWith('/')) pattern += '/'
        if (!/^\/[a-z2-7]{52}\//.test(pattern)) {
            followStatus('a pattern is /<their pubkey>/path/ (52 base32 characters, then a subtree)', false)
            return
        }
        const via = $('follow-via').value.trim()
        const body = {pattern, added: Date.now() / 1000, via: via ? [via] : []}
        const res = await fetch('/~/.follows/' + await followId(pattern), {
            method: 'PUT', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify(body)})
        if (!res.ok) { followStatus(await problem(res), false); return }
        followStatus('following ' + pattern, true)
    })
    async function unfollow(id) {
        const res = await fetch('/~/.follows/' + id, {method: 'DELETE', credentials: 'same-origin'})
        if (!res.ok) followStatus(await problem(res), false)
        else followStatus('unfollowed (what was replicated stays)', true)
    }
    function fromHash() {
        const q = new URLSearchParams(location.hash.slice(1))
        if (q.get('follow')) { $('follow-pattern').value = q.get('follow'); $('follow-via').value = q.get('via') || '' }
    }
    window.addEventListener('hashchange', fromHash)

    // ------------------------------------------------------------------ the DHT record

    // A record as rows of a table (textContent only: addresses are other people's text).
    function recordRows(into, doc, extra = []) {
        const when = s => s ? new Date(s * 1000).toLocaleString() : '–'
        const rows = [['public key', doc.pubkey], ['addresses', doc.addrs.join(' ')], ['seq', String(doc.seq)],
                      ['expires', when(doc.expires)], ['signature', doc.signature || '–'], ...extra]
        into.replaceChildren(...rows.map(([name, value]) => {
            const tr = row([name, value], ['dht-field', 'dht-value'])
            tr.dataset.field = name
            return tr
        }))
    }
    async function showDht() {
        const res = await fetch('/.well-known/statebus/dht', {credentials: 'same-origin', cache: 'no-store'})
        const rows = $('dht-own-rows')
        if (!res.ok) { rows.replaceChildren(row([await problem(res)])); return }
        const doc = await res.json()
        if (!doc.dht) { rows.replaceChildren(row(['this node is in no DHT (it runs without one)'])); return }
        $('dht-name').textContent = `(DHT ${doc.dht}, ${doc.neighbours} neighbours)`
        if (!doc.record) { rows.replaceChildren(row(['not published yet'])); return }
        const when = s => s ? new Date(s * 1000).toLocaleString() : '–'
        recordRows(rows, doc.record, [
            ['published', when(doc.published)],
            ['stored on', `${doc.stored_on} DHT node${doc.stored_on === 1 ? '' : 's'}`],
            ['held at last check', doc.holders === null ? 'not checked yet' : `${doc.holders} (${when(doc.checked)})`]])
    }
    $('dht-form').addEventListener('submit', async ev => {
        ev.preventDefault()
        const pubkey = $('dht-pubkey').value.trim()
        $('dht-status').textContent = 'looking up…'
        $('dht-status').className = 'status'
        const res = await fetch('/.well-known/statebus/dht/' + encodeURIComponent(pubkey),
                                {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) {
            $('dht-found').hidden = true
            $('dht-status').textContent = await problem(res)
            $('dht-status').className = 'status error'
            return
        }
        recordRows($('dht-found-rows'), await res.json())
        $('dht-found').hidden = false
        $('dht-status').textContent = 'found'
        $('dht-status').className = 'status ok'
    })

    // ------------------------------------------------------------------ joins (issue 13)

    // The joins this node runs (GET /.well-known/statebus/invites/joins: the same progress events
    // `statebus join` prints), read every 2 s, and every 0.3 s while one is under way.
    let joinedSeen = 0
    const settled = state => state === 'joined' || state.startsWith('failed')
    async function showJoins() {
        const res = await fetch('/.well-known/statebus/invites/joins', {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) return false
        const {joins} = await res.json()
        const kib = n => (n / 1024).toFixed(0) + ' KiB'
        $('joins-list').replaceChildren(...joins.slice().reverse().map(j => {
            const bundle = j.total ? `${kib(j.done)} of ${kib(j.total)} (${Math.floor(100 * j.done / j.total)}%)` : '–'
            const tr = row([j.id, j.by.slice(0, 12) + '…', j.app || '(none)', j.state, bundle],
                           ['join-id', 'join-by', 'join-app', 'join-state', 'join-bundle'])
            tr.dataset.join = j.id
            return tr
        }))
        $('joins-count').textContent = `(${joins.length})`
        const joined = joins.filter(j => j.state === 'joined').length
        if (joined !== joinedSeen) { joinedSeen = joined; showDht().catch(() => {}) }  // it may be in a new DHT
        return joins.some(j => !settled(j.state))
    }
    async function watchJoins() {
        let busy = false
        try { if (!document.hidden) busy = await showJoins() } catch (e) { /* the node is away */ }
        setTimeout(watchJoins, busy ? 300 : 2000)
    }

    async function start() {
        const info = await statebus.ready
        if (!info || !info.owner) return
        $('node-pane').hidden = false
        fromHash()
        watchNode()
        const res = await fetch('/.well-known/statebus/node', {credentials: 'same-origin', cache: 'no-store'})
        $('node-record').textContent = res.ok ? JSON.stringify(await res.json(), null, 2) : await problem(res)
        draw()
        // the record changes when the node republishes (its addresses, every republish interval) and at
        // each self-check: read it again every few seconds while the page is shown
        watchJoins()
        const dht = () => { if (!document.hidden) showDht().catch(() => {}) }
        dht()
        setInterval(dht, 5000)
    }

    window.dataBrowser = {selected, history, past}
    start()
})()
