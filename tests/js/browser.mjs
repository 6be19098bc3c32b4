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
//   --visit URL              open URL first and wait for it to load (repeatable, in order; one browser
//                            profile, so cookies set there are kept), then open <url>
//   --cookies                add the browser's cookie jar to the output ("cookies": [{name, value, ...}])
//
// Output: ONE JSON line on stdout:
//   {"ok": true|false, "result": <JSON of window.__result>, "console": [{"type","text"}],
//    "page_errors": ["..."], "error": null|"...", "url": "<final url>", "title": "..."}
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
    const opts = {wait: 'window.__done === true', timeout_ms: 15000, inject_braid: false, visit: [], cookies: false}
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
            case '--visit': opts.visit.push(value()); break
            case '--cookies': opts.cookies = true; break
            default:
                if (a.startsWith('--') || opts.url) throw new Error(`unknown argument ${a}`)
                opts.url = a
        }
    }
    if (!opts.url) throw new Error('usage: node browser.mjs <url> [--script ...] [--wait EXPR] ...')
    return opts
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
        for (const url of opts.visit) {
            const response = await page.goto(url, {waitUntil: 'load', timeout: left()})
            out.visits.push({url, status: response ? response.status() : null, final: page.url()})
        }
        await page.goto(opts.url, {waitUntil: 'load', timeout: left()})
        if (opts.inject_braid) await page.addScriptTag({path: BRAID_CLIENT})
        if (opts.script) await page.addScriptTag({content: load_script(opts.script)})
        if (opts.wait) await page.waitForFunction(opts.wait, null, {timeout: left(), polling: 50})
        out.result = await page.evaluate(() => (window.__result === undefined ? null : window.__result))
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
                 visits: []}
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
