// Headless-Chromium harness (playwright-core driving Debian's /usr/bin/chromium).
//
//   node browser.mjs <url> [options]
//
// Options:
//   --script FILE_OR_JS      run this in the page after load (a path to a .js file, else inline JS);
//                            it runs as a classic <script>, so top-level statements and async IIFEs work
//   --init-script FILE_OR_JS run this before any page script (page.addInitScript)
//   --inject-braid           load braid-http's browser client first (defines window.braid_fetch)
//   --wait EXPR              wait until EXPR is truthy in the page (default: window.__done === true)
//   --no-wait                do not wait for anything after the script
//   --timeout-ms T           overall time limit (default 15000)
//   --screenshot PATH.png    save a screenshot (also on failure, when possible)
//   --chromium PATH          browser binary (default $CHROMIUM or /usr/bin/chromium)
//   --visit URL              after the first page (and its script and wait), open URL in a new tab of the
//                            same browser (same cookies), as a user following a link; repeatable
//   --visit-wait EXPR        in each visited tab, wait until EXPR is truthy, for --visit-wait-ms at most
//                            (not reaching it is no error: the tab's own script may never run)
//   --visit-wait-ms T        (default 3000)
//   --visit-probe EXPR       evaluate EXPR in each visited tab and report it as "probe" (JSON)
//   --before URL             open URL first, in the page's own tab, and wait for it to load (repeatable, in
//                            order; one browser profile, so cookies set there are kept), then open <url>
//   --cookies                add the browser's cookie jar to the output ("cookies": [{name, value, ...}])
//
// Output: ONE JSON line on stdout:
//   {"ok": true|false, "result": <JSON of window.__result>, "console": [{"type","text"}],
//    "page_errors": ["..."], "error": null|"...", "url": "<final url>", "title": "...",
//    "visits": [{"url", "status", "headers", "download", "title", "waited", "probe", "error"}],
//    "before": [{"url", "status", "final"}]}
// Exit code 0 when ok, 1 otherwise. The browser is always closed and its profile dir removed (if that
// fails, "cleanup_error" says why).

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {chromium} from 'playwright-core'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const BRAID_CLIENT = path.join(HERE, 'node_modules', 'braid-http', 'braid-http-client.js')

const CHROMIUM_FLAGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
]

function parse_args(argv) {
    const opts = {wait: 'window.__done === true', timeout_ms: 15000, inject_braid: false, visits: [],
                  visit_wait: null, visit_wait_ms: 3000, visit_probe: null,
                  before: [], cookies: false}
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i]
        const value = () => {
            if (i + 1 >= argv.length) throw new Error(`${a} needs a value`)
            return argv[++i]
        }
        switch (a) {
            case '--script': opts.script = value(); break
            case '--init-script': opts.init_script = value(); break
            case '--inject-braid': opts.inject_braid = true; break
            case '--wait': opts.wait = value(); break
            case '--no-wait': opts.wait = null; break
            case '--timeout-ms': opts.timeout_ms = Number(value()); break
            case '--screenshot': opts.screenshot = value(); break
            case '--chromium': opts.chromium = value(); break
            case '--visit': opts.visits.push(value()); break
            case '--visit-wait': opts.visit_wait = value(); break
            case '--visit-wait-ms': opts.visit_wait_ms = Number(value()); break
            case '--visit-probe': opts.visit_probe = value(); break
            case '--before': opts.before.push(value()); break
            case '--cookies': opts.cookies = true; break
            default:
                if (a.startsWith('--') || opts.url) throw new Error(`unknown argument ${a}`)
                opts.url = a
        }
    }
    if (!opts.url) throw new Error('usage: node browser.mjs <url> [--script ...] [--wait EXPR] ...')
    return opts
}

// Open `url` in a new tab of `browser` as a user would (a download is an outcome, not an error), wait for
// opts.visit_wait for a while, and report what happened. The tab stays open until the browser closes.
async function visit(browser, url, opts, left) {
    const seen = {url, status: null, headers: null, download: false, title: null, waited: null, probe: null, error: null}
    const page = await browser.newPage()
    page.on('download', () => { seen.download = true })
    page.on('pageerror', err => { seen.page_errors = [...(seen.page_errors ?? []), String(err)] })
    try {
        const response = await page.goto(url, {waitUntil: 'load', timeout: Math.min(left(), 20000)})
        if (response) { seen.status = response.status(); seen.headers = await response.allHeaders() }
    } catch (e) {
        const text = String(e && e.message ? e.message : e).split('\n')[0]
        if (/Download is starting|ERR_ABORTED/.test(text)) seen.download = true
        else seen.error = text
    }
    if (!seen.download && !seen.error) {
        const budget = () => Math.max(1, Math.min(left(), opts.visit_wait_ms))
        if (opts.visit_wait) {
            try {
                await wait_for(page, opts.visit_wait, budget())
                seen.waited = true
            } catch { seen.waited = false }
        }
        const guard = ms => new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), ms))
        try { seen.title = await Promise.race([page.title(), guard(budget())]) } catch {}
        if (opts.visit_probe) {
            try {
                seen.probe = await Promise.race([page.evaluate(opts.visit_probe), guard(budget())])
            } catch (e) { seen.probe_error = String(e && e.message ? e.message : e).split('\n')[0] }
        }
    }
    return seen
}

// Wait until `expr` is truthy in the page, checking every 50 ms from here (page.waitForFunction polls
// inside the page with eval, which a Content-Security-Policy without 'unsafe-eval' refuses).
async function wait_for(page, expr, timeout_ms) {
    const deadline = Date.now() + timeout_ms
    for (;;) {
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`Timeout ${timeout_ms}ms exceeded waiting for ${expr}`)
        const check = page.evaluate(expr).catch(() => false)  // e.g. the page is navigating
        const late = new Promise(resolve => setTimeout(() => resolve(false), left))
        if (await Promise.race([check, late])) return
        await new Promise(resolve => setTimeout(resolve, Math.min(50, Math.max(0, deadline - Date.now()))))
    }
}

// Run `content` in the page as a classic <script>. A page whose Content-Security-Policy refuses inline
// scripts (the node's own page does) gets it through the DevTools protocol instead, which that policy
// does not govern; as from a <script>, an error it throws is reported as a page error.
async function add_script(page, content, out) {
    try {
        await page.addScriptTag({content})
        return
    } catch (e) {
        if (!/Content.Security.Policy|violates/i.test(String(e && e.message ? e.message : e))) throw e
    }
    out.console = out.console.filter(m => !/inline script violates/.test(m.text))
    const error = await page.evaluate(code => {
        try {
            (0, eval)(code)
            return null
        } catch (err) {
            return String(err && err.message ? err.message : err)
        }
    }, content)
    if (error !== null) out.page_errors.push(error)
}

// A path to an existing file -> its text; anything else is inline JavaScript.
function load_script(spec) {
    try {
        if (spec.length < 4096 && fs.statSync(spec).isFile()) return fs.readFileSync(spec, 'utf8')
    } catch {}
    return spec
}

async function run(opts, out) {
    const executablePath = opts.chromium || process.env.CHROMIUM || '/usr/bin/chromium'
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'statebus-chromium-'))
    const deadline = Date.now() + opts.timeout_ms
    const left = () => Math.max(1, deadline - Date.now())
    let browser = null
    let page = null
    try {
        // launchPersistentContext gives Chromium our own fresh --user-data-dir.
        browser = await chromium.launchPersistentContext(profile, {
            executablePath,
            headless: true,
            args: CHROMIUM_FLAGS,
            timeout: left(),
        })
        page = browser.pages()[0] ?? (await browser.newPage())
        page.setDefaultTimeout(left())
        page.on('console', msg => out.console.push({type: msg.type(), text: msg.text()}))
        page.on('pageerror', err => out.page_errors.push(String(err && err.message ? err.message : err)))
        if (opts.init_script) await page.addInitScript({content: load_script(opts.init_script)})
        for (const url of opts.before) {
            const response = await page.goto(url, {waitUntil: 'load', timeout: left()})
            out.before.push({url, status: response ? response.status() : null, final: page.url()})
        }
        await page.goto(opts.url, {waitUntil: 'load', timeout: left()})
        if (opts.inject_braid) await page.addScriptTag({path: BRAID_CLIENT})
        if (opts.script) await add_script(page, load_script(opts.script), out)
        if (opts.wait) await wait_for(page, opts.wait, left())
        out.result = await page.evaluate(() => (window.__result === undefined ? null : window.__result))
        if (opts.visits.length) {
            out.visits = []
            for (const url of opts.visits) out.visits.push(await visit(browser, url, opts, left))
        }
        if (opts.cookies) out.cookies = await browser.cookies()
        out.ok = true
    } catch (e) {
        out.error = String(e && e.message ? e.message : e).split('\n')[0]
        if (page) {
            try {
                out.result = await page.evaluate(() => (window.__result === undefined ? null : window.__result))
            } catch {}
        }
    } finally {
        if (page) {
            try { out.url = page.url(); out.title = await page.title() } catch {}
            if (opts.screenshot) {
                try { await page.screenshot({path: opts.screenshot, timeout: 5000}) } catch (e) {
                    out.error ??= `screenshot failed: ${e.message}`
                }
            }
        }
        if (browser) await browser.close().catch(() => {})
        // Chromium's helper processes can still be writing into the profile while a browser that
        // timed out at launch dies (ENOTEMPTY); rmSync retries exactly that, and a failure to clean
        // up is reported beside the result instead of replacing it with a crash.
        try {
            fs.rmSync(profile, {recursive: true, force: true, maxRetries: 10, retryDelay: 100})
        } catch (e) {
            out.cleanup_error = `could not remove ${profile}: ${e.message}`
        }
    }
}

async function main() {
    const out = {ok: false, result: null, console: [], page_errors: [], error: null, url: null, title: null,
                 before: []}
    let opts
    try {
        opts = parse_args(process.argv.slice(2))
    } catch (e) {
        out.error = e.message
        process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(2))
        return
    }
    // A hard stop in case Chromium itself hangs while closing.
    setTimeout(() => {
        out.error ??= `browser harness hard timeout after ${opts.timeout_ms + 10000} ms`
        process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(1))
    }, opts.timeout_ms + 10000).unref()
    await run(opts, out)
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(out.ok ? 0 : 1))
}

main()
