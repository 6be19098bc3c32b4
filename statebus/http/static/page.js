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
        badge(key, has ? v : undefined)
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
    }
    start()
})()
