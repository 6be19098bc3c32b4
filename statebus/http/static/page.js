// The node's home page: identity, a live tree of the namespace's keys, a value viewer and a put form.
// Uses only statebus.js (window.statebus). Nothing secret is ever shown: the login cookie is HttpOnly.
(function () {
    'use strict'
    const $ = id => document.getElementById(id)
    const versions = {}          // key -> version list of the last event
    let selected = null, root = '/~/', pending = false, shown = 0
    const flashed = new Set()
    const collator = new Intl.Collator(undefined, {numeric: true})
    // The tree is lazy: a subtree's names are listed (GET <subtree>/?limit=&after=) a page at a time, only
    // when it is shown, and one stream on the root, opened from the root listing's cursor (?since=<seq>),
    // keeps what is listed live. Nothing of a closed subtree is held but the names of its first page.
    const PAGE = 200             // names per listing request ("more…" asks for the next page)
    const BIG = 100              // a subtree with more names than this shows closed until clicked
    const BUDGET = 1000          // names listed by themselves at start: small subtrees open by themselves
    const dirs = new Map()       // subtree path ('/~/', '/~/notes/') → {names, next, loaded, open}
    let listedAtStart = 0, keyCount = null

    // A key as statebus.state names it: this node's own keys as /~/… (what statebus.put accepts).
    function displayed(key) {
        if (!key.startsWith('/')) key = key === '~' || key.startsWith('~/') ? '/' + key : '/~/' + key
        const own = '/' + statebus.node + '/'
        return statebus.node && key.startsWith(own) ? '/~/' + key.slice(own.length) : key
    }
    function href(key) {
        return key.split('/').map(encodeURIComponent).join('/').replace(/^\/%7E\//, '/~/')
    }

    // Names in natural order: notes/2 before notes/10 (pages come in the node's order: code points).
    function byName(a, b) {
        return collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0)
    }

    function dir(path) {
        let d = dirs.get(path)
        if (!d) dirs.set(path, d = {names: new Set(), next: null, loaded: false, open: false, loading: null})
        return d
    }

    // One page of a subtree's names after those already listed; returns the listing's body.
    function list(path, limit) {
        const d = dir(path)
        if (d.loading) return d.loading
        d.loading = (async () => {
            const q = new URLSearchParams({limit: String(limit)})
            if (d.next) q.set('after', d.next)
            const res = await fetch(href(path) + '?' + q, {credentials: 'same-origin', cache: 'no-store'})
            if (!res.ok) throw new Error(`listing ${path}: HTTP ${res.status}`)
            const body = await res.json()
            for (const name of body.children) d.names.add(name)
            d.next = body.next
            d.loaded = true
            return body
        })().finally(() => { d.loading = null })
        return d.loading
    }

    // At start: the root's first page, then small subtrees open by themselves (breadth first) until
    // BUDGET names are listed; a subtree whose first BIG names are not all of it stays closed.
    async function openSmall() {
        const queue = [root]
        while (queue.length && listedAtStart < BUDGET) {
            const path = queue.shift()
            for (const name of [...dir(path).names].sort(byName)) {
                if (!name.endsWith('/') || listedAtStart >= BUDGET) continue
                const sub = dir(path + name)
                const body = await list(path + name, BIG)
                listedAtStart += body.children.length
                if (body.next === null) { sub.open = true; queue.push(path + name) }
            }
            render()
        }
    }

    // A live change: its name goes into each listed subtree on its path (a name past a subtree's
    // listed pages waits for "more…"); a deleted key leaves its subtree.
    function place(key, exists) {
        if (!key.startsWith(root)) return
        const parts = key.slice(root.length).split('/')
        let path = root
        for (let i = 0; i < parts.length; i++) {
            const d = dirs.get(path)
            if (!d || !d.loaded) return
            const last = i === parts.length - 1
            const name = last ? parts[i] : parts[i] + '/'
            if (last && !exists) { d.names.delete(name); return }
            if (!d.names.has(name)) {
                if (d.next !== null && name > d.next) return        // not listed yet: "more…" brings it
                d.names.add(name)
                if (!last) Object.assign(dir(path + name), {loaded: true, open: true})  // a new subtree: empty until now
            }
            path += name
        }
    }

    // The value of a key: from the tree's stream when it changed since the page listed it, else read
    // with its signature material (GET ?proof, statebus.getVerified), so what is shown is what was checked.
    async function show(key) {
        const mine = ++shown         // a later show (a click, the put form, the stream) supersedes this one
        selected = key
        $('selected').textContent = key
        $('selected').className = ''
        $('verified').hidden = true              // the last key's badge goes at once; this key's comes checked
        $('put-key').value = key                 // at once: a put made while the value is read goes here
        const typed = $('put-value').value       // what the form held, to leave alone if edited meanwhile
        let has = key in statebus.state, v = statebus.state[key], checked = null
        if (!has) {
            try {
                checked = await statebus.getVerified(key)
                if (checked.value !== undefined) { has = true; v = checked.value }
                else if (checked.reason !== 'no such key') {            // bytes: no value in a ?proof answer
                    checked = null
                    v = await statebus.get(key)
                    has = v !== undefined
                }
            } catch (e) { checked = null }
            // a read answered after a newer show (the put's own, or the stream's) is stale: it must not
            // put the old value back (the pane would keep it, since nothing else changes after it)
            if (mine !== shown) return
        }
        const bytes = v instanceof Uint8Array || v instanceof Blob
        $('value').textContent = !has ? '(deleted)' : bytes ? `<${v.length || v.size} bytes>` : JSON.stringify(v, null, 2)
        $('version').textContent = versions[key] ? 'version ' + versions[key].join(', ') : ''
        if (has && !bytes && $('put-value').value === typed) $('put-value').value = JSON.stringify(v, null, 2)
        badge(mine, key, has && !bytes ? v : undefined, checked)
        if (window.dataBrowser) window.dataBrowser.selected(key, has)
        render()
    }

    // The value shown is checked against the signature of its author (statebus.verifyProof).
    async function badge(mine, key, value, checked) {
        const el = $('verified')
        el.hidden = true
        if (value === undefined) return
        let result = checked
        if (!result) {
            try {
                const res = await fetch(href(key) + '?proof', {credentials: 'same-origin', cache: 'no-store'})
                const data = await res.json()
                result = await statebus.verifyProof(key, value, data.proof)
            } catch (e) {
                result = {verified: false, reason: 'could not get its signature: ' + e.message}
            }
        }
        if (mine !== shown) return               // a newer show has its own badge
        el.textContent = result.verified ? 'verified' : 'not verified'
        el.title = result.reason
        el.className = 'badge ' + (result.verified ? 'verified' : 'unverified')
        el.hidden = false
    }

    function item(text, depth, className) {
        const li = document.createElement('li')
        if (className) li.className = className
        li.style.paddingLeft = 10 + 16 * depth + 'px'
        li.textContent = text
        return li
    }
    function keyItem(key, text, depth) {
        const li = item(text, depth)
        li.dataset.key = key
        li.title = key
        if (key === selected) li.classList.add('selected')
        if (flashed.has(key)) li.classList.add('flash')
        li.addEventListener('click', () => show(key))
        return li
    }
    function toggle(path) {
        const d = dir(path)
        d.open = !d.open
        if (d.open && !d.loaded) list(path, PAGE).then(render, e => status(e.message))
        render()
    }
    function status(text) { $('count').textContent = text }

    // What is open, as listed: a closed subtree is one line; an open one its names, then "more…" when
    // the node has more. A search keeps the listed keys whose path holds the text.
    function draw(tree, path, depth) {
        const d = dir(path)
        for (const name of [...d.names].sort(byName)) {
            const full = path + name
            if (!name.endsWith('/')) { tree.append(keyItem(full, name, depth)); continue }
            const sub = dir(full)
            const li = item(name, depth, 'dir')
            li.dataset.dir = full
            if (!sub.open) {
                li.className = sub.loaded && sub.next !== null ? 'dir closed big' : 'dir closed'
                li.textContent = sub.loaded && sub.next !== null ? `${name} (more than ${sub.names.size} keys: open)`
                    : sub.loaded ? `${name} (${sub.names.size} keys: open)` : `${name} (open)`
            }
            li.addEventListener('click', () => toggle(full))
            tree.append(li)
            if (sub.open) draw(tree, full, depth + 1)
        }
        if (d.loaded && d.next !== null && (path === root || d.open)) {
            const more = item('more…', depth, 'dir more')
            more.dataset.more = path
            more.addEventListener('click', () => list(path, PAGE).then(render, e => status(e.message)))
            tree.append(more)
        }
    }
    function listedKeys(path, out) {
        for (const name of dir(path).names) {
            if (name.endsWith('/')) listedKeys(path + name, out)
            else out.push(path + name)
        }
        return out
    }

    function render() {
        if (pending) return
        pending = true
        requestAnimationFrame(() => {
            pending = false
            const needle = $('search').value.trim().toLowerCase()
            const tree = $('tree')
            tree.textContent = ''
            if (needle) {
                const keys = listedKeys(root, []).filter(k => k.toLowerCase().includes(needle))
                for (const key of keys.sort((a, b) => byName(a, b))) tree.append(keyItem(key, key.slice(root.length), 0))
            } else {
                draw(tree, root, 0)
            }
            flashed.clear()
            if (keyCount !== null) status(keyCount === 1 ? '(1 key)' : `(${keyCount} keys)`)
            $('empty').hidden = dir(root).names.size > 0 || !dir(root).loaded
        })
    }

    function onChange(key, value, event) {
        if (event.type === 'reset') {            // the stream could not resume: list what is open again
            for (const [path, d] of dirs) if (d.loaded) { d.names.clear(); d.next = null; d.loaded = false; if (path === root || d.open) list(path, PAGE).then(render) }
            return
        }
        versions[key] = event.version
        if (event.type !== 'snapshot') flashed.add(key)
        place(key, value !== undefined)
        counted()
        if (key === selected) show(key)
        else render()
    }

    // The key count (the owner's /.well-known/statebus), read again at most every 5 s while keys change.
    let counting = null
    function counted() {
        if (counting) return
        counting = setTimeout(async () => {
            counting = null
            try { const info = await statebus.info(); if (info.keys !== undefined) { keyCount = info.keys; render() } } catch (e) {}
        }, 5000)
    }

    function setLive(state) {
        const live = $('live')
        live.textContent = state === 'open' ? 'live' : state === 'connecting' ? 'reconnecting…' : 'offline'
        live.className = 'badge ' + (state === 'open' ? 'on' : 'off')
    }

    $('put-form').addEventListener('submit', async ev => {
        ev.preventDefault()
        const status = $('put-status')
        let value
        try {
            value = JSON.parse($('put-value').value)
        } catch (e) {
            status.textContent = 'The value is not valid JSON: ' + e.message
            status.className = 'status error'
            return
        }
        try {
            const key = $('put-key').value.trim()
            const res = await statebus.put(key, value)
            status.textContent = 'Saved, version ' + res.version.join(', ')
            status.className = 'status ok'
            if (displayed(key).startsWith(root)) show(displayed(key))  // the value pane follows the put
        } catch (e) {
            status.textContent = e.message
            status.className = 'status error'
        }
    })

    // Installed apps (the owner only): grants, state, calls and costs, and a link that launches each
    // app on its own origin. Names, descriptions and trap reasons are other people's text: textContent only.
    function cell(row, text, className) {
        const td = document.createElement('td')
        td.textContent = text
        if (className) td.className = className
        row.append(td)
        return td
    }
    function grantsText(g) {
        const parts = []
        if (g.read.length) parts.push('read ' + g.read.join(', '))
        if (g.write.length) parts.push('write ' + g.write.join(', '))
        if (g.read_others.length) parts.push("read others' " + g.read_others.join(', '))
        if (g.send && g.send.length) parts.push("send notices to others' " + g.send.join(', '))
        return parts.join('; ') || 'nothing'
    }
    function ms(seconds) { return (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1) + ' ms' }
    async function showApps() {
        const res = await fetch('/.well-known/statebus/app-origins', {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) return
        const {apps} = await res.json()
        const list = $('apps-list')
        list.textContent = ''
        for (const app of apps) {
            const row = document.createElement('tr')
            row.dataset.app = app.name
            const name = cell(row, '', 'app-name')
            const link = document.createElement('a')
            link.href = app.launch
            link.textContent = app.name
            link.title = 'open ' + app.origin
            name.append(link, ' ' + (app.version || ''))
            const about = document.createElement('div')
            about.className = 'hint'
            about.textContent = (app.description || '') + ' ' + app.origin +
                (app.capabilities ? ` · open with ${app.capabilities} live capabilit${app.capabilities === 1 ? 'y' : 'ies'}` : '')
            name.append(about)
            cell(row, grantsText(app.granted), 'app-grants')
            const rt = app.runtime
            const state = rt ? rt.state + (rt.trap_reason ? ': ' + rt.trap_reason : '') : 'no handlers running'
            cell(row, state, 'app-state ' + (rt ? rt.state : 'none'))
            cell(row, rt ? String(rt.calls) : '–', 'app-calls')
            cell(row, rt ? ms(rt.total_cost) + ' / ' + ms(rt.avg_cost) : '–', 'app-cost')
            list.append(row)
        }
        $('apps-count').textContent = apps.length === 1 ? '(1 app)' : `(${apps.length} apps)`
    }

    // Install is consent: the node checks the bundle (signature, hash, manifest) and stages it; the page
    // shows what it asks for, as `statebus app install` does, and installs it only on the owner's click.
    // An upgrade asking for more than was granted says so first.
    const APPS = '/.well-known/statebus/apps'
    function appStatus(text, ok) {
        $('app-check-status').textContent = text
        $('app-check-status').className = 'status ' + (ok ? 'ok' : 'error')
    }
    async function appCall(path, init) {
        const res = await fetch(APPS + path, {method: 'POST', credentials: 'same-origin', ...init})
        const body = await res.json().catch(() => ({}))
        if (!res.ok) throw new Error(body.detail || body.error || ('HTTP ' + res.status))
        return body
    }
    async function checkApp() {
        const files = [...$('app-files').files]
        if (files.length) {
            const sig = files.find(f => f.name.endsWith('.sig'))
            const bundle = files.find(f => !f.name.endsWith('.sig'))
            if (!sig || !bundle) throw new Error('choose the bundle file and its .sig file together')
            return appCall('/check', {body: bundle, headers: {
                'content-type': 'application/vnd.statebus.bundle',
                'statebus-bundle-signature': btoa(await sig.text()),
            }})
        }
        const source = $('app-source').value.trim()
        if (!source) throw new Error('name a published app (/<author>/.apps/<name>) or choose a bundle')
        const via = $('app-via').value.trim()
        return appCall('/check', {headers: {'content-type': 'application/json'},
                                  body: JSON.stringify({source, via: via ? [via] : []})})
    }
    let checked = null
    $('app-check-form').addEventListener('submit', async ev => {
        ev.preventDefault()
        $('app-consent').hidden = true
        appStatus('Checking…', true)
        try {
            checked = await checkApp()
        } catch (e) {
            appStatus(e.message, false)
            return
        }
        const c = checked, now = c.installed
        if (now && now.hash === c.hash) {
            appStatus(`${c.name} ${c.version} is installed already`, true)
            return
        }
        appStatus('', true)
        $('app-consent-title').textContent = `${c.name} ${c.version} by ${c.author}`
        $('app-consent-about').textContent = (c.description ? c.description + ' · ' : '') +
            `bundle sha256 ${c.hash} (${c.size} bytes), signed by ${c.signer}`
        $('app-consent-more').hidden = !c.asks_more
        $('app-consent-more').textContent = now ? `${c.name} ${c.version} asks for more than you granted ${now.version}.` : ''
        $('app-consent-permissions').textContent = 'It asks to:\n' + c.permission_lines.join('\n')
        $('app-consent-yes').textContent = now ? `Upgrade ${now.version} → ${c.version}` : 'Install'
        $('app-consent').hidden = false
    })
    $('app-consent-no').addEventListener('click', () => {
        checked = null
        $('app-consent').hidden = true
        appStatus('Not installed: you did not consent', false)
    })
    $('app-consent-yes').addEventListener('click', async () => {
        const c = checked
        if (!c) return
        $('app-consent').hidden = true
        try {
            const app = await appCall('/install', {headers: {'content-type': 'application/json'},
                                                  body: JSON.stringify({hash: c.hash, grant: c.permissions})})
            appStatus(`${c.installed ? 'Upgraded' : 'Installed'} ${app.name} ${app.version}`, true)
            $('app-check-form').reset()
        } catch (e) {
            appStatus(e.message, false)
        }
        checked = null
        showApps().catch(() => {})
    })

    // Invite a friend (the owner only): POST the invite routes; the QR code is the node's own SVG.
    $('invite-form').addEventListener('submit', async (event) => {
        event.preventDefault()
        const status = $('invite-status')
        const body = {uses: Number($('invite-uses').value), expires: $('invite-expires').value.trim()}
        if ($('invite-app').value) body.app = $('invite-app').value
        if ($('invite-note').value.trim()) body.note = $('invite-note').value.trim()
        const res = await fetch('/.well-known/statebus/invites', {
            method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify(body)})
        const answer = await res.json()
        if (!res.ok) {
            status.textContent = answer.detail || answer.error
            status.className = 'status error'
            return
        }
        status.textContent = 'Invite ' + answer.id + ', expires ' + new Date(answer.exp * 1000).toLocaleString()
        status.className = 'status ok'
        $('invite-link').value = answer.link
        const svg = new DOMParser().parseFromString(answer.qr_svg, 'image/svg+xml').documentElement
        $('invite-qr').replaceChildren(document.importNode(svg, true))
        $('invite-out').hidden = false
    })
    async function inviteApps() {
        const res = await fetch('/.well-known/statebus/apps', {credentials: 'same-origin', cache: 'no-store'})
        if (!res.ok) return
        const select = $('invite-app')
        for (const app of (await res.json()).apps) {
            const option = document.createElement('option')
            option.value = option.textContent = app.name
            select.append(option)
        }
    }

    // Swarms (issue 14): read from /metrics (the owner's), shown only when the node has a swarm.
    async function showSwarm() {
        try {
            const r = await fetch('/metrics', {credentials: 'same-origin'})
            if (!r.ok) return
            const m = {}
            for (const line of (await r.text()).split('\n')) {
                const hit = /^(statebus_swarm_[a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line)
                if (hit) m[hit[1]] = Number(hit[2])
            }
            if (!('statebus_swarm_peers' in m)) return
            const origin = m['statebus_swarm_torrents{role="origin"}'] || 0
            const fetched = m['statebus_swarm_torrents{role="fetched"}'] || 0
            const mb = n => (n / 1e6).toFixed(1) + ' MB'
            $('swarm').textContent = `swarm: ${origin + fetched} blobs (${origin} own, ${fetched} fetched)`
                + ` · ${m.statebus_swarm_peers} peers · up ${mb(m.statebus_swarm_uploaded_bytes_total)}`
                + ` · down ${mb(m.statebus_swarm_downloaded_bytes_total)}`
                + ` · ratio ${m.statebus_swarm_share_ratio.toFixed(2)}`
            $('swarm').hidden = false
        } catch (e) { /* the node is away: the live badge says so */ }
    }

    $('search').addEventListener('input', () => render())
    window.nodePage = {show, render, displayed}

    async function start() {
        const info = await statebus.ready
        if (info.error) {
            $('pubkey').textContent = '(cannot reach the node: ' + info.error + ')'
            return
        }
        $('pubkey').textContent = info.node
        $('role').textContent = info.owner ? 'owner' : 'guest'
        $('role').className = 'badge ' + (info.owner ? 'owner' : 'guest')
        $('login-note').hidden = info.owner
        root = info.owner ? '/~/' : '/~/public/'
        $('root').textContent = root
        document.title = 'statebus node ' + info.node.slice(0, 8) + '…'
        setLive('connecting')
        if (info.keys !== undefined) keyCount = info.keys
        const first = await list(root, PAGE).catch(e => { status(e.message); return null })
        render()
        // the stream resumes from the listing's cursor: every change after the listing, and no snapshot
        statebus.subscribe(root, onChange, {onstatus: setLive, since: first ? first.seq : undefined})
        if (first) openSmall().catch(e => status(e.message))
        if (info.owner) {
            $('apps').hidden = false
            $('invite').hidden = false
            inviteApps().catch(() => {})
            showApps().catch(() => {})
            setInterval(() => showApps().catch(() => {}), 5000)
            showSwarm()
            setInterval(showSwarm, 5000)
        }
    }
    start()
})()
