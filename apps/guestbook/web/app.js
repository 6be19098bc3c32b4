// The guestbook's page: reads and writes the node's guestbook/ keys through /statebus.js, live.
// It runs on the app's own origin (guestbook.localhost:<port>) with the capability the node gave
// it, so it can touch guestbook/ and nothing else.
(function () {
  'use strict'
  const list = document.getElementById('entries')
  const count = document.getElementById('count')
  const status = document.getElementById('status')
  const form = document.getElementById('sign')
  const entries = new Map()

  function render() {
    const sorted = [...entries.entries()].sort((a, b) => (a[0] < b[0] ? 1 : -1))
    list.replaceChildren(...sorted.map(([, {value: e, verified, reason}]) => {
      const li = document.createElement('li')
      const name = document.createElement('span')
      name.className = 'name'
      name.textContent = e.name // text, never HTML: entries are other people's data
      // the author's signature, checked in this page (statebus.js, docs/wire-protocol.md "Proofs"):
      // an entry that fails is flagged, never shown as its author's
      const badge = document.createElement('span')
      badge.className = 'badge ' + (verified ? 'verified' : 'unverified')
      badge.textContent = verified ? 'verified' : 'not verified'
      badge.title = verified ? 'signed by its author' : reason
      const text = document.createElement('p')
      text.textContent = e.text
      li.append(name, ' ', badge, text)
      return li
    }))
  }

  statebus.subscribe('guestbook/entries/', (key, value, event) => {
    if (key === null) { entries.clear(); render(); return } // reset: fresh snapshots follow
    if (event.type === 'delete' || value === undefined) entries.delete(key)
    else entries.set(key, {value, verified: event.verified, reason: event.reason})
    render()
  }, {verify: true})
  statebus.subscribe('guestbook/count', (key, value) => {
    count.textContent = value === undefined ? '' : `${value} ${value === 1 ? 'entry' : 'entries'}`
  })

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const data = new FormData(form)
    const id = Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8)
    status.textContent = ''
    try {
      await statebus.put('guestbook/entries/' + id, {name: data.get('name'), text: data.get('text')})
      form.reset()
    } catch (err) {
      status.textContent = err.message // the node's reason (the validator's, or the schema's)
    }
  })
})()
