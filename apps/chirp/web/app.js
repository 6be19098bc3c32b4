// chirp's page. It runs on the app's own origin (chirp.localhost:<port>) with the capability the node
// gave it: it reads and writes chirp/ in the owner's namespace, and reads chirp/ of the people the
// node follows (their replicas on this node), all through /statebus.js, live over SSE.
//
// Everything is data in the author's own namespace (docs/apps/chirp.md):
//   chirp/profile            {name, bio, avatar: "chirp/images/<name>"}
//   chirp/images/<name>      an image (bytes with a content type; a blob when large)
//   chirp/posts/<id>         {text, at, reply_to?, repost_of?, quote_of?, images?, mentions?}
//   chirp/likes/<pk>-<id>    {post: "/<pk>/chirp/posts/<id>", at}
//   chirp/follows/<pk>, chirp/blocks/<pk>, chirp/mutes/<pk>   {at}
// Text is always set with textContent: posts are other people's data, never HTML.
(function () {
  'use strict'
  const PAGE = 50
  const CACHE = 'chirp-cache-v1'
  const CACHE_POSTS = 1000
  const SUBS_PER_STREAM = 200
  const PK = /[a-z2-7]{52}/
  const $ = id => document.getElementById(id)
  const el = (tag, props = {}, ...kids) => {
    const e = document.createElement(tag)
    for (const [k, v] of Object.entries(props)) {
      if (k === 'text') e.textContent = v
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
      else if (k === 'class') e.className = v
      else e.setAttribute(k, v)
    }
    e.append(...kids.filter(k => k !== null && k !== undefined))
    return e
  }

  let me = null
  const posts = new Map()      // "/<pk>/chirp/posts/<id>" -> post
  const likes = new Map()      // "/<pk>/chirp/likes/<name>" -> like
  const profiles = new Map()   // pk -> profile
  const follows = new Map()    // pk -> Set of the pks they follow
  const blocks = new Set(), mutes = new Set()
  let settings = {}            // chirp/settings: {inbox: 'anyone' | 'follows' | 'closed'}
  let shown = PAGE, selected = -1, replyTo = null, quoteOf = null, online = false
  let seenNotes = Number(localStorage.getItem('chirp-seen') || 0)
  window.chirp = {posts, likes, profiles, follows, blocks, mutes, rendered: 0}   // for tests and the curious
  Object.defineProperty(window.chirp, 'unverified', {get: () => unverified})
  Object.defineProperty(window.chirp, 'settings', {get: () => settings})

  // ------------------------------------------------------------------ data

  function split(key) {   // "/<pk>/chirp/<rest>" (or "/~/chirp/<rest>") -> [pk, rest]
    const m = /^\/([a-z2-7]{52}|~)\/chirp\/(.*)$/.exec(key)
    return m ? [m[1] === '~' ? me : m[1], m[2]] : null
  }
  const abs = (pk, rest) => `/${pk}/chirp/${rest}`
  const authorOf = key => key.slice(1, key.indexOf('/', 1))   // of a key this page stored: "/<pk>/chirp/…"
  const myFollows = () => follows.get(me) || new Set()
  const hidden = pk => blocks.has(pk) || (pk !== me && mutes.has(pk))

  // Every stream asks for each value's signature (verify: statebus.js checks the author's Ed25519
  // signature in this browser, with WebCrypto). A value that fails is dropped and counted, never shown.
  const verified = new Set()
  let unverified = 0
  const dropped = []
  window.chirp.dropped = dropped
  function onChange(key, value, event) {
    if (key === null) return   // a reset: fresh snapshots follow
    const s = split(key)
    if (!s) return
    const [pk, rest] = s
    const full = abs(pk, rest)
    // Images are not taken from the stream: each is fetched and checked when shown (image() below).
    if (rest.startsWith('images/')) return
    if (event && event.verified === false) {
      unverified++
      dropped.push({key: full, reason: event.reason})
      console.warn('chirp: dropped', full, event.reason)
      verified.delete(full)
      value = undefined
    } else if (event && event.verified) verified.add(full)
    const gone = value === undefined
    if (rest.startsWith('posts/')) gone ? posts.delete(full) : posts.set(full, value)
    else if (rest.startsWith('likes/')) gone ? likes.delete(full) : likes.set(full, value)
    else if (rest === 'profile') gone ? profiles.delete(pk) : profiles.set(pk, value)
    else if (rest.startsWith('follows/')) {
      const set = follows.get(pk) || new Set()
      gone ? set.delete(rest.slice(8)) : set.add(rest.slice(8))
      follows.set(pk, set)
      if (pk === me) resubscribe()
    } else if (pk === me && rest === 'settings') settings = gone || value === null || typeof value !== 'object' ? {} : value
    else if (pk === me && rest.startsWith('blocks/')) gone ? blocks.delete(rest.slice(7)) : blocks.add(rest.slice(7))
    else if (pk === me && rest.startsWith('mutes/')) gone ? mutes.delete(rest.slice(6)) : mutes.add(rest.slice(6))
    else return
    schedule()
    saveSoon()
  }

  // The inbox: notices other people's nodes delivered to this node (/<me>/inbox/chirp/<sender>/<name>,
  // each signed by its sender), so a reply or like from someone the owner does not follow shows too.
  const notices = new Map()    // "/<me>/inbox/chirp/<sender>/<name>" -> notice with its sender
  window.chirp.notices = notices
  function onInbox(key, value, event) {
    if (key === null) return
    const m = /^\/(?:[a-z2-7]{52}|~)\/inbox\/chirp\/([a-z2-7]{52})\/[A-Za-z0-9_-]+$/.exec(key)
    if (!m) return
    // a notice is signed by its sender, not by the owner: statebus.js names the key that signed it
    const signed = event && (event.verified || event.signer === m[1])
    if (value !== undefined && !signed) { unverified++; dropped.push({key, reason: event && event.reason}) }
    if (value === undefined || !signed || typeof value !== 'object' || value === null) notices.delete(key)
    else notices.set(key, {...value, sender: m[1]})
    schedule()
  }

  // One stream for the owner's chirp/, and one per SUBS_PER_STREAM followed people (a stream follows at
  // most 256 keys). Reopened when the follow set changes; the new streams open before the old close.
  let own = null, theirs = [], followKey = ''
  function onstatus(s) {
    online = s === 'open'
    const c = $('conn')
    c.textContent = online ? 'live' : 'offline: showing what this page saved'
    c.className = online ? 'open' : 'offline'
  }
  function resubscribe() {
    const want = [...myFollows()].filter(pk => pk !== me && PK.test(pk)).sort()
    if (want.join() === followKey) return
    followKey = want.join()
    const old = theirs
    theirs = []
    for (let i = 0; i < want.length; i += SUBS_PER_STREAM) {
      theirs.push(statebus.subscribe(want.slice(i, i + SUBS_PER_STREAM).map(pk => `/${pk}/chirp/`), onChange,
                                     {verify: true}))
    }
    old.forEach(stop => stop())
  }

  // Offline: the page keeps the newest posts it saw (and who wrote them) in localStorage and shows them
  // at once on the next load, before (or without) a connection.
  let saveTimer = null
  function saveSoon() {
    if (saveTimer) return
    saveTimer = setTimeout(() => {
      saveTimer = null
      const newest = [...posts].sort((a, b) => b[1].at - a[1].at).slice(0, CACHE_POSTS)
      try {
        localStorage.setItem(CACHE, JSON.stringify({
          me, posts: newest, likes: [...likes], profiles: [...profiles],
          follows: [...follows].map(([pk, s]) => [pk, [...s]]), blocks: [...blocks], mutes: [...mutes],
        }))
      } catch (e) { /* storage full or disabled: the live view still works */ }
    }, 1000)
  }
  function loadCache() {
    let c
    try { c = JSON.parse(localStorage.getItem(CACHE) || 'null') } catch (e) { c = null }
    if (!c || (me && c.me !== me)) return
    me = me || c.me
    for (const [k, v] of c.posts) posts.set(k, v)
    for (const [k, v] of c.likes) likes.set(k, v)
    for (const [k, v] of c.profiles) profiles.set(k, v)
    for (const [k, v] of c.follows) follows.set(k, new Set(v))
    c.blocks.forEach(pk => blocks.add(pk))
    c.mutes.forEach(pk => mutes.add(pk))
  }

  // ------------------------------------------------------------------ writes

  const newId = () => Date.now().toString(36).padStart(9, '0') + Math.random().toString(36).slice(2, 6)
  async function putBytes(key, file) {
    const res = await fetch('/~/' + key, {method: 'PUT', body: file, credentials: 'same-origin',
                                          headers: {'Content-Type': file.type || 'application/octet-stream'}})
    if (!res.ok) {
      let detail = res.statusText
      try { detail = (await res.json()).detail || detail } catch (e) {}
      throw new Error(detail)
    }
  }
  function say(text) { $('status').textContent = text }
  async function act(fn) {
    say('')
    try { await fn() } catch (e) { say(e.message) }   // the node's reason (validator, schema, grant)
  }
  async function post(fields) {
    const id = newId()
    const text = fields.text || ''
    const mentions = [...new Set((text.match(/@[a-z2-7]{52}/g) || []).map(m => m.slice(1)))]
    // @name: the one person this page knows by that display name (the people followed, and oneself)
    for (const m of text.match(/@[\w.-]{1,32}/g) || []) {
      const want = m.slice(1).toLowerCase()
      const found = [...profiles].filter(([pk, p]) => p && typeof p.name === 'string' && p.name.toLowerCase() === want)
      if (found.length === 1 && !mentions.includes(found[0][0])) mentions.push(found[0][0])
    }
    const value = {at: Date.now(), ...fields}
    if (mentions.length) value.mentions = mentions
    await statebus.put('chirp/posts/' + id, value)
    return abs(me, 'posts/' + id)
  }
  const likeKey = postKey => { const [pk, rest] = split(postKey); return `chirp/likes/${pk}-${rest.slice(6)}` }
  const toggleLike = postKey => act(async () => {
    const k = likeKey(postKey)
    if (likes.has('/' + me + '/' + k)) await statebus.delete(k)
    else await statebus.put(k, {post: postKey, at: Date.now()})
  })
  const repost = postKey => act(() => post({repost_of: postKey}))
  const setMark = (kind, pk, on) => act(() => on ? statebus.put(`chirp/${kind}/${pk}`, {at: Date.now()})
                                                 : statebus.delete(`chirp/${kind}/${pk}`))

  $('compose').addEventListener('submit', ev => {
    ev.preventDefault()
    const form = $('compose')
    act(async () => {
      const fields = {text: form.text.value}
      const file = form.image.files[0]
      if (file) {
        const name = newId()
        await putBytes('chirp/images/' + name, file)
        fields.images = ['chirp/images/' + name]
      }
      if (replyTo) fields.reply_to = replyTo
      if (quoteOf) fields.quote_of = quoteOf
      await post(fields)
      form.reset()
      setContext(null, null)
      counter()
    })
  })
  function counter() {
    const left = 280 - [...$('compose').text.value].length
    $('left').textContent = left
    $('left').className = left < 0 ? 'over' : ''
  }
  $('compose').text.addEventListener('input', counter)
  function setContext(reply, quote) {
    replyTo = reply; quoteOf = quote
    const p = $('replying')
    const target = reply || quote
    p.hidden = !target
    if (target) {
      p.replaceChildren(`${reply ? 'Replying to' : 'Quoting'} ${name(split(target)[0])} `,
                        el('button', {type: 'button', text: '×', 'aria-label': 'cancel', onclick: () => setContext(null, null)}))
      $('compose').text.focus()
    }
  }

  // ------------------------------------------------------------------ rendering

  const name = pk => (profiles.get(pk) && profiles.get(pk).name) || pk.slice(0, 8) + '…'
  const when = at => new Date(at).toLocaleString()
  const imgUrl = (pk, rel) => (pk === me ? '/~/' : `/${pk}/`) + rel
  // An image's record can arrive before its bytes (a blob is fetched apart, after its signed pointer):
  // a failed load is tried again a few times.
  // Images are checked like every other value: statebus.getVerifiedBytes fetches the bytes with their
  // signature material, and an image is shown only if its author signed these very bytes (a blob: their
  // sha256). One that fails is not shown: it is marked "unverified" and counted, with the reason.
  const imageChecks = new Map()   // key -> promise of {url} or {reason}
  const badImages = new Set()
  function checkedImage(key) {
    let p = imageChecks.get(key)
    if (!p) {
      p = statebus.getVerifiedBytes(key).then(r => r.verified ? {url: URL.createObjectURL(r.blob)} : {reason: r.reason})
      p.catch(() => imageChecks.delete(key))
      imageChecks.set(key, p)
    }
    return p
  }
  function image(props, key) {
    const img = el('img', props)
    let tries = 0
    const retry = () => { imageChecks.delete(key); if (tries++ < 10) setTimeout(load, 1000) }
    const load = () => checkedImage(key).then(r => {
      if (r.url) { img.src = r.url; img.title = 'signed by its author'; return }
      if (r.reason === 'no such key') return retry()   // its bytes are not on this node yet
      img.classList.add('unverified')
      img.alt = 'unverified image: ' + r.reason
      img.title = img.alt
      if (!badImages.has(key)) { badImages.add(key); unverified++; dropped.push({key, reason: r.reason}) }
    }, retry)
    load()
    return img
  }
  function avatar(pk) {
    const p = profiles.get(pk)
    return p && p.avatar ? image({class: 'avatar', alt: ''}, imgUrl(pk, p.avatar)) : el('span', {class: 'avatar'})
  }
  // Reply, repost and like counts of every post, counted in one pass per render (not per article).
  let counted = null
  function countAll() {
    const replies = new Map(), reposts = new Map(), liked = new Map()
    const bump = (m, k) => m.set(k, (m.get(k) || 0) + 1)
    for (const [k, p] of posts) {
      if (hidden(authorOf(k))) continue
      if (p.reply_to) bump(replies, p.reply_to)
      if (p.repost_of) bump(reposts, p.repost_of)
    }
    for (const [k, l] of likes) if (!hidden(authorOf(k))) bump(liked, l.post)
    return {replies, reposts, liked}
  }
  function counts(key) {
    counted = counted || countAll()
    return {replies: counted.replies.get(key) || 0, reposts: counted.reposts.get(key) || 0,
            liked: counted.liked.get(key) || 0}
  }
  function article(key, ctx) {
    const [pk, rest] = split(key)
    const p = posts.get(key)
    if (p.repost_of) {
      const orig = posts.get(p.repost_of)
      if (orig && !hidden(split(p.repost_of)[0])) return article(p.repost_of, `⟲ ${name(pk)} reposted`)
      return el('article', {'data-key': key, tabindex: '-1'}, el('span'), el('div', {class: 'ctx', text: `⟲ ${name(pk)} reposted a post this node does not hold`}))
    }
    const c = counts(key)
    const mine = pk === me
    const liked = likes.has('/' + me + '/' + likeKey(key))
    const text = el('div', {class: 'text', text: p.text || ''})
    let quoted = null
    if (p.quote_of) {
      const q = posts.get(p.quote_of)
      quoted = el('div', {class: 'quoted'}, q ? el('b', {text: name(split(p.quote_of)[0]) + ': '}) : null,
                  q ? q.text : 'a post this node does not hold')
    }
    const images = (p.images || []).map(rel => image({class: 'img', alt: 'image'}, imgUrl(pk, rel)))
    let context = ctx || null
    if (!context && p.reply_to) context = `↩ replying to ${name(split(p.reply_to)[0])}`
    return el('article', {'data-key': key, tabindex: '-1'},
      avatar(pk),
      el('div', {class: 'who'}, el('a', {href: '#user/' + pk, text: name(pk)}), ' ', el('small', {text: '· ' + when(p.at)}),
         verified.has(key) ? el('span', {class: 'verified', title: `signed by ${pk}, checked in this browser`, text: ' ✓ signed'}) : null),
      context ? el('div', {class: 'ctx', text: context}) : null,
      text, ...images, quoted,
      el('div', {class: 'acts'},
        el('button', {class: 'reply', title: 'reply (r)', text: `↩ ${c.replies}`, onclick: () => setContext(key, null)}),
        el('button', {class: 'repost', title: 'repost (t)', text: `⟲ ${c.reposts}`, onclick: () => repost(key)}),
        el('button', {class: 'like' + (liked ? ' on' : ''), title: 'like (l)', text: `♥ ${c.liked}`, onclick: () => toggleLike(key)}),
        el('button', {class: 'quote', title: 'quote (q)', text: '❝', onclick: () => setContext(null, key)}),
        el('a', {href: '#post' + key.replace('/chirp/posts', ''), text: 'thread'}),
        mine ? el('button', {class: 'delete', text: 'delete', onclick: () => act(() => statebus.delete('chirp/posts/' + rest.slice(6)))}) : null))
  }
  const newest = list => list.sort((a, b) => (b[1].at - a[1].at) || (a[0] < b[0] ? 1 : -1))
  function timeline() {
    const who = myFollows()
    return newest([...posts].filter(([k]) => { const pk = authorOf(k); return (pk === me || who.has(pk)) && !hidden(pk) }))
  }
  const WHAT = {reply: 'replied', like: 'liked your post', repost: 'reposted your post', quote: 'quoted your post',
                mention: 'mentioned you', follow: 'follows you'}
  function notifications() {
    const out = []
    const mineKey = k => typeof k === 'string' && k.startsWith(`/${me}/chirp/posts/`)
    for (const [k, p] of posts) {
      const pk = authorOf(k)
      if (pk === me || hidden(pk)) continue
      if (mineKey(p.reply_to)) out.push({at: p.at, pk, what: 'replied', key: k})
      if (mineKey(p.repost_of)) out.push({at: p.at, pk, what: 'reposted your post', key: p.repost_of})
      if (mineKey(p.quote_of)) out.push({at: p.at, pk, what: 'quoted your post', key: k})
      if ((p.mentions || []).includes(me)) out.push({at: p.at, pk, what: 'mentioned you', key: k})
    }
    for (const [k, l] of likes) {
      const pk = authorOf(k)
      if (pk !== me && !hidden(pk) && mineKey(l.post)) out.push({at: l.at, pk, what: 'liked your post', key: l.post})
    }
    for (const [pk, set] of follows) if (pk !== me && !hidden(pk) && set.has(me)) out.push({at: 0, pk, what: 'follows you'})
    // notices from the inbox, unless this node holds the record itself (then it is counted above)
    for (const n of notices.values()) {
      const pk = n.sender
      if (hidden(pk) || !WHAT[n.type]) continue
      if (posts.has(n.from) || likes.has(n.from) || (n.type === 'follow' && (follows.get(pk) || new Set()).has(me))) continue
      out.push({at: n.at, pk, what: WHAT[n.type], key: n.type === 'like' || n.type === 'repost' ? n.post : n.from, text: n.text})
    }
    return out.sort((a, b) => b.at - a.at)
  }

  function page(list, render) {
    const items = list.slice(0, shown).map(render)
    $('more').hidden = list.length <= shown
    return items
  }
  function peopleView() {
    const input = el('input', {type: 'text', name: 'who', placeholder: 'a pubkey, a profile link or an invite link', 'aria-label': 'follow'})
    const form = el('form', {id: 'follow', onsubmit: ev => {
      ev.preventDefault()
      const m = PK.exec(input.value)
      if (!m) { say('no pubkey (52 base32 characters) in that'); return }
      setMark('follows', m[0], true)
      input.value = ''
    }}, input, el('button', {text: 'Follow'}))
    const person = (pk, ...buttons) => el('div', {class: 'person'}, avatar(pk),
      el('a', {href: '#user/' + pk, text: name(pk)}), el('span', {class: 'pk', text: pk}), ...buttons)
    const button = (text, fn) => el('button', {text, onclick: fn})
    // The node follows their chirp/ when its owner says so on the node's own page (an app cannot write
    // /~/.follows/): this link opens that page with the follow filled in, for the owner to confirm.
    const host = location.hostname.replace(/^chirp\./, '').replace(/^localhost$/, '127.0.0.1')
    const nodePage = pk => `${location.protocol}//${host}${location.port ? ':' + location.port : ''}/#follow=/${pk}/chirp/`
    const following = [...myFollows()].sort().map(pk => person(pk,
      el('a', {href: nodePage(pk), target: '_blank', rel: 'noopener', text: 'follow on my node'}),
      button('Unfollow', () => setMark('follows', pk, false)),
      button(mutes.has(pk) ? 'Unmute' : 'Mute', () => setMark('mutes', pk, !mutes.has(pk))),
      button('Block', () => setMark('blocks', pk, true))))
    const followers = [...follows].filter(([pk, s]) => pk !== me && s.has(me)).map(([pk]) => person(pk))
    const blocked = [...blocks].sort().map(pk => person(pk, button('Unblock', () => setMark('blocks', pk, false))))
    return [el('h2', {text: 'Follow someone'}), form,
            el('p', {class: 'ctx', text: `Your profile link: ${location.origin}/#user/${me}`}),
            el('h2', {text: `Following (${following.length})`}), ...following,
            el('h2', {text: `Followers (${followers.length})`}), ...followers,
            el('h2', {text: `Blocked (${blocked.length})`}), ...blocked]
  }
  function profileHead(pk) {
    const p = profiles.get(pk) || {}
    const head = el('div', {class: 'profile-head'}, avatar(pk), el('h2', {text: name(pk)}),
                    el('p', {text: p.bio || ''}), el('p', {class: 'pk', text: pk}))
    if (pk === me) {
      const f = el('form', {id: 'profile', onsubmit: ev => {
        ev.preventDefault()
        act(async () => {
          const value = {name: f.pname.value, bio: f.bio.value}
          const file = f.avatar.files[0]
          if (file) { const n = 'avatar-' + newId(); await putBytes('chirp/images/' + n, file); value.avatar = 'chirp/images/' + n }
          else if (p.avatar) value.avatar = p.avatar
          await statebus.put('chirp/profile', value)
        })
      }}, el('input', {type: 'text', name: 'pname', 'aria-label': 'display name', placeholder: 'display name', value: p.name || ''}),
         el('input', {type: 'text', name: 'bio', 'aria-label': 'bio', placeholder: 'bio', value: p.bio || ''}),
         el('input', {type: 'file', name: 'avatar', accept: 'image/*', 'aria-label': 'avatar'}),
         el('button', {text: 'Save profile'}))
      // who may leave notices in this node's inbox (checked by chirp's validator on this node)
      const modes = [['anyone', 'Notices from anyone'], ['follows', 'Notices from people I follow and people they follow'],
                     ['closed', 'No notices (replies of people I follow still show)']]
      const inbox = el('select', {id: 'inbox', 'aria-label': 'who may send you notices',
        onchange: ev => act(() => statebus.put('chirp/settings', {...settings, inbox: ev.target.value}))},
        ...modes.map(([v, t]) => { const o = el('option', {value: v, text: t}); o.selected = (settings.inbox || 'anyone') === v; return o }))
      head.append(f, el('label', {text: 'Inbox '}, inbox))
    } else if (!myFollows().has(pk)) {
      head.append(el('button', {text: 'Follow', onclick: () => setMark('follows', pk, true)}))
    }
    return head
  }

  let scheduled = false
  function schedule() {
    if (scheduled) return
    scheduled = true
    requestAnimationFrame(render)
  }
  function render() {
    scheduled = false
    if (!me) return
    const started = performance.now()
    counted = null
    const route = location.hash.slice(1) || 'home'
    const [view, arg, arg2] = route.split('/')
    document.querySelectorAll('nav a').forEach(a => a.classList.toggle('on', a.dataset.view === view))
    const notes = notifications()
    const unread = notes.filter(n => n.at > seenNotes).length
    $('unread').textContent = unread ? String(unread) : ''
    const focused = document.activeElement && document.activeElement.closest('#view article')
    const keep = focused ? focused.dataset.key : null
    let items
    if (view === 'notifications') {
      if (notes.length && notes[0].at > seenNotes) { seenNotes = notes[0].at; localStorage.setItem('chirp-seen', String(seenNotes)) }
      items = page(notes, n => el('div', {class: 'note'}, el('a', {href: '#user/' + n.pk, text: name(n.pk)}), ` ${n.what}`,
        n.key && posts.has(n.key) ? el('div', {class: 'ctx', text: posts.get(n.key).text || ''})
          : n.text ? el('div', {class: 'ctx', text: n.text}) : null))
    } else if (view === 'people') {
      items = peopleView()
      $('more').hidden = true
    } else if (view === 'me' || view === 'user') {
      const pk = view === 'me' ? me : arg
      const theirs = newest([...posts].filter(([k]) => authorOf(k) === pk))
      items = [profileHead(pk), ...(hidden(pk) ? [] : page(theirs, ([k]) => article(k)))]
    } else if (view === 'post') {
      const key = `/${arg}/chirp/posts/${arg2}`
      const chain = []
      for (let k = key; k && posts.has(k) && chain.length < 50; k = posts.get(k).reply_to) chain.unshift(k)
      const replies = newest([...posts].filter(([k, p]) => p.reply_to === key && !hidden(authorOf(k)))).reverse()
      items = [...chain.map(k => article(k)), el('h2', {text: `Replies (${replies.length})`}), ...replies.map(([k]) => article(k))]
      $('more').hidden = true
    } else {
      items = page(timeline(), ([k]) => article(k))
    }
    $('view').replaceChildren(...items)
    window.chirp.rendered = document.querySelectorAll('#view article').length
    window.chirp.lastRender = performance.now() - started
    if (keep) {
      const again = $('view').querySelector(`article[data-key="${CSS.escape(keep)}"]`)
      if (again) again.focus()
    }
  }
  window.addEventListener('hashchange', () => { shown = PAGE; selected = -1; window.scrollTo(0, 0); schedule() })
  $('more').addEventListener('click', () => { shown += PAGE; schedule() })

  // ------------------------------------------------------------------ keyboard

  document.addEventListener('keydown', ev => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)
    if (ev.key === 'Escape') { setContext(null, null); ev.target.blur && ev.target.blur(); return }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return
    const arts = [...document.querySelectorAll('#view article')]
    const at = node => (node && node.closest ? node.closest('#view article') : null)
    const cur = at(ev.target) || at(document.activeElement)
    selected = cur ? arts.indexOf(cur) : selected
    const key = cur ? cur.dataset.key : null
    if (ev.key === 'j' || ev.key === 'k') {
      selected = Math.max(0, Math.min(arts.length - 1, selected + (ev.key === 'j' ? 1 : -1)))
      if (arts[selected]) arts[selected].focus()
    } else if (ev.key === 'n') { ev.preventDefault(); $('compose').text.focus() }
    else if (!key || !posts.has(key)) return
    else if (ev.key === 'l') toggleLike(key)
    else if (ev.key === 'r') { ev.preventDefault(); setContext(key, null) }
    else if (ev.key === 'q') { ev.preventDefault(); setContext(null, key) }
    else if (ev.key === 't') repost(key)
    else if (ev.key === 'Enter') location.hash = '#post' + key.replace('/chirp/posts', '')
  })

  // ------------------------------------------------------------------ start

  loadCache()
  onstatus('connecting')
  statebus.ready.then(info => {
    if (!info || !info.node) return   // offline: the saved view stays
    if (me && me !== info.node) { for (const m of [posts, likes, profiles, follows]) m.clear(); blocks.clear(); mutes.clear() }
    me = info.node
    // one stream for the owner's chirp/ and inbox (a browser keeps 6 connections per host)
    const mine = (key, value, event) => key !== null && /^\/[^/]+\/inbox\//.test(key) ? onInbox(key, value, event) : onChange(key, value, event)
    own = statebus.subscribe(['/~/chirp/', '/~/inbox/chirp/'], mine, {onstatus, verify: true})
    resubscribe()
    schedule()
  })
  schedule()
})()
