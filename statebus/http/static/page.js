// The node's home page: identity, a live tree of the namespace's keys, a value viewer and a put form.
// Uses only statebus.js (window.statebus). Nothing secret is ever shown: the login cookie is HttpOnly.
(function () {
    'use strict'
    const $ = id => document.getElementById(id)
    const versions = {}          // key -> version list of the last event
    let selected = null, root = '/~/', pending = false
    const flashed = new Set()

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
        render()
    }

    function render() {
        if (pending) return
        pending = true
        requestAnimationFrame(() => {
            pending = false
            const keys = Object.keys(statebus.state).filter(k => k.startsWith(root)).sort()
            const tree = $('tree')
            tree.textContent = ''
            const dirs = new Set()
            for (const key of keys) {
                const parts = key.slice(root.length).split('/')
                for (let i = 0; i < parts.length - 1; i++) {
                    const dir = parts.slice(0, i + 1).join('/') + '/'
                    if (dirs.has(dir)) continue
                    dirs.add(dir)
                    const li = document.createElement('li')
                    li.className = 'dir'
                    li.style.paddingLeft = 10 + 16 * i + 'px'
                    li.textContent = parts[i] + '/'
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
        } catch (e) {
            status.textContent = e.message
            status.className = 'status error'
        }
    })

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
        if (info.owner) { showSwarm(); setInterval(showSwarm, 5000) }
    }
    start()
})()
