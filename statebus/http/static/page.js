// The node's home page: identity, a live tree of the namespace's keys, a value viewer and a put form.
// Uses only statebus.js (window.statebus). Nothing secret is ever shown: the login cookie is HttpOnly.
(function () {
    'use strict'
    const $ = id => document.getElementById(id)
    const versions = {}          // key -> version list of the last event
    let selected = null, root = '/~/', pending = false
    const flashed = new Set()
    const collator = new Intl.Collator(undefined, {numeric: true})
    const BIG = 100              // subtrees with more keys render closed (a click opens them)
    const opened = new Set()

    // A key as statebus.state names it: this node's own keys as /~/… (what statebus.put accepts).
    function displayed(key) {
        if (!key.startsWith('/')) key = key === '~' || key.startsWith('~/') ? '/' + key : '/~/' + key
        const own = '/' + statebus.node + '/'
        return statebus.node && key.startsWith(own) ? '/~/' + key.slice(own.length) : key
    }

    // Keys in natural order, segment by segment: notes/2 before notes/10, a dir's keys together.
    function byPath(a, b) {
        const x = a.split('/'), y = b.split('/')
        for (let i = 0; i < Math.min(x.length, y.length); i++) {
            const c = collator.compare(x[i], y[i]) || (x[i] < y[i] ? -1 : x[i] > y[i] ? 1 : 0)
            if (c) return c
        }
        return x.length - y.length
    }

    function show(key) {
        selected = key
        $('selected').textContent = key
        $('selected').className = ''
        const has = key in statebus.state
        const v = statebus.state[key]
        $('value').textContent = !has ? '(deleted)'
            : v instanceof Uint8Array ? `<${v.length} bytes>` : JSON.stringify(v, null, 2)
        $('version').textContent = versions[key] ? 'version ' + versions[key].join(', ') : ''
        $('put-key').value = key
        if (has && !(v instanceof Uint8Array)) $('put-value').value = JSON.stringify(v, null, 2)
        badge(key, has ? v : undefined)
        if (window.dataBrowser) window.dataBrowser.selected(key, has)
        render()
    }

    // The value shown is checked against the signature of its author (statebus.verifyProof).
    async function badge(key, value) {
        const el = $('verified')
        el.hidden = true
        if (value === undefined || value instanceof Uint8Array) return
        let result
        try {
            const res = await fetch(key.split('/').map(encodeURIComponent).join('/').replace(/^\/%7E\//, '/~/') + '?proof',
                                    {credentials: 'same-origin', cache: 'no-store'})
            const data = await res.json()
            result = await statebus.verifyProof(key, value, data.proof)
        } catch (e) {
            result = {verified: false, reason: 'could not get its signature: ' + e.message}
        }
        if (key !== selected) return
        el.textContent = result.verified ? 'verified' : 'not verified'
        el.title = result.reason
        el.className = 'badge ' + (result.verified ? 'verified' : 'unverified')
        el.hidden = false
    }

    function render() {
        if (pending) return
        pending = true
        requestAnimationFrame(() => {
            pending = false
            const needle = $('search').value.trim().toLowerCase()
            const keys = Object.keys(statebus.state)
                .filter(k => k.startsWith(root) && (!needle || k.toLowerCase().includes(needle))).sort(byPath)
            const tree = $('tree')
            tree.textContent = ''
            const dirs = new Set()
            const sizes = new Map()       // a subtree of more than BIG keys shows closed until clicked
            for (const key of keys) {
                const parts = key.slice(root.length).split('/')
                for (let i = 1; i < parts.length; i++) {
                    const dir = parts.slice(0, i).join('/') + '/'
                    sizes.set(dir, (sizes.get(dir) || 0) + 1)
                }
            }
            keyLoop: for (const key of keys) {
                const parts = key.slice(root.length).split('/')
                for (let i = 0; i < parts.length - 1; i++) {
                    const dir = parts.slice(0, i + 1).join('/') + '/'
                    const closed = sizes.get(dir) > BIG && !opened.has(dir) && !needle
                    if (dirs.has(dir)) { if (closed) continue keyLoop; continue }
                    dirs.add(dir)
                    const li = document.createElement('li')
                    li.className = 'dir'
                    li.style.paddingLeft = 10 + 16 * i + 'px'
                    li.textContent = parts[i] + '/'
                    if (closed) {
                        li.className = 'dir big'
                        li.dataset.dir = root + dir
                        li.textContent = `${parts[i]}/ (${sizes.get(dir)} keys: open)`
                        li.addEventListener('click', () => { opened.add(dir); render() })
                        tree.append(li)
                        continue keyLoop
                    }
                    tree.append(li)
                }
                const li = document.createElement('li')
                li.dataset.key = key
                li.title = key
                li.style.paddingLeft = 10 + 16 * (parts.length - 1) + 'px'
                li.textContent = parts[parts.length - 1]
                if (key === selected) li.classList.add('selected')
                if (flashed.has(key)) li.classList.add('flash')
                li.addEventListener('click', () => show(key))
                tree.append(li)
            }
            flashed.clear()
            $('count').textContent = keys.length === 1 ? '(1 key)' : `(${keys.length} keys)`
            $('empty').hidden = keys.length > 0
        })
    }

    function onChange(key, value, event) {
        if (event.type === 'reset') { render(); return }
        versions[key] = event.version
        if (event.type !== 'snapshot') flashed.add(key)
        if (key === selected) show(key)
        else render()
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
        statebus.subscribe(root, onChange, {onstatus: setLive})
        render()
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
