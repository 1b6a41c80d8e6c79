// Drives rpcguard's /docs page in a real headless Chromium (Debian's
// `chromium` package) with playwright-core, as a newcomer would use it:
// sign up (which signs in), call methods over HTTP and a WebSocket session,
// get a scope granted, sign out. Also checks that a method description with
// markup does not run while its Markdown is rendered, that schemas unfold,
// copy-as-curl (the command is run), the /openrpc.json link and deep links
// (/docs#get_caller), that no request leaves for a non-loopback origin,
// that the page's CSP is never violated, and that the page works under a
// path prefix behind a proxy.
//
//   node docs-page.mjs SERVER_URL CHROMIUM_PATH [SCREENSHOT_DIR]
//
// When the flow needs a scope granted it prints `GRANT <user> <scope>` on
// stdout and waits for a line on stdin (the Rust test runs `rpcguard user
// grant` and answers). Screenshots are written only when SCREENSHOT_DIR is
// given. Ends with `OK docs page: all checks passed`.

import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const [serverUrl, chromiumPath, screenshotDir] = process.argv.slice(2);
if (!serverUrl || !chromiumPath) {
  console.error('usage: node docs-page.mjs SERVER_URL CHROMIUM_PATH [SCREENSHOT_DIR]');
  process.exit(2);
}
const USER = 'docs_user';
const PASSWORD = 'correct horse battery';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

/** Opens a method, fills its fields, presses Send and returns what the
 *  page shows: the request, the answer (parsed) and the error fields. */
async function tryIt(page, method, fill = {}) {
  const details = page.locator(`details[data-method="${method}"]`);
  if (!(await details.evaluate((d) => d.open))) await details.locator('summary').first().click();
  for (const [name, value] of Object.entries(fill)) {
    await details.locator(`[data-param="${name}"]`).fill(value);
  }
  await details.locator('button.send').click();
  await page.waitForFunction((m) => {
    const d = document.querySelector(`details[data-method="${m}"]`);
    const out = d.querySelector('pre.response');
    return out.textContent !== '' && out.textContent !== '…' && !d.querySelector('button.send').disabled;
  }, method);
  const response = await details.locator('pre.response').textContent();
  const json = response.slice(response.indexOf('\n\n') + 2);
  let answer;
  try {
    answer = JSON.parse(json);
  } catch (_) {
    throw new Error(`${method}: the page shows no JSON answer: ${response}`);
  }
  const errorShown = await details.locator('dl.rpc-error').isVisible();
  return {
    request: await details.locator('pre.request').textContent(),
    response,
    answer,
    error: errorShown
      ? {
          code: Number(await details.locator('.error-code').textContent()),
          message: await details.locator('.error-message').textContent(),
          data: JSON.parse(await details.locator('.error-data').textContent()),
        }
      : null,
  };
}

async function accessMark(page, method) {
  return page.locator(`details[data-method="${method}"] summary .access`).textContent();
}

async function shot(page, name) {
  if (!screenshotDir) return;
  const file = path.join(screenshotDir, name);
  await page.screenshot({ path: file });
  console.log(`screenshot ${file}`);
}

/** A reverse proxy that serves the server under /rpc/ (HTTP and
 *  WebSocket upgrades), forwarding the browser's Host header. */
function startPrefixProxy(target) {
  const upstream = new URL(target);
  const strip = (url) => (url.startsWith('/rpc/') ? url.slice(4) : null);
  const proxy = http.createServer((req, res) => {
    const pathAndQuery = strip(req.url);
    if (pathAndQuery === null) {
      res.writeHead(404).end();
      return;
    }
    const forward = http.request({
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: pathAndQuery,
      headers: req.headers,
    }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  proxy.on('upgrade', (req, socket, head) => {
    const pathAndQuery = strip(req.url);
    if (pathAndQuery === null) {
      socket.destroy();
      return;
    }
    const conn = net.connect(Number(upstream.port), upstream.hostname, () => {
      const lines = [`${req.method} ${pathAndQuery} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      conn.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) conn.write(head);
      socket.pipe(conn).pipe(socket);
    });
    conn.on('error', () => socket.destroy());
    socket.on('error', () => conn.destroy());
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(proxy)));
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  // Nothing may leave for another host: every request is checked, and a
  // non-loopback one is recorded and aborted.
  const offHost = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || LOOPBACK.has(url.hostname)) return route.continue();
    offHost.push(url.href);
    return route.abort();
  });
  const sockets = [];
  const rpcPosts = [];
  const pageErrors = [];
  const dialogs = [];
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on('request', (req) => {
    if (req.method() === 'POST') rpcPosts.push({ url: req.url(), auth: req.headers().authorization || null, body: req.postData() });
  });

  // --- signed out ---
  const docsUrl = new URL('docs', serverUrl).href;
  const response = await page.goto(docsUrl);
  check(response.status() === 200, 'GET /docs answers 200');
  await page.waitForSelector('body[data-ready="true"]');
  for (const name of ['rpc.discover', 'sign_up', 'sign_in', 'get_caller', 'require_scopes', 'xss_probe']) {
    check(await page.locator(`details[data-method="${name}"]`).count() === 1, `the page lists ${name}`);
  }
  check(await page.locator('details[data-method="get_caller"] svg.lock.closed').count() === 1, 'get_caller has a closed lock');
  check(await page.locator('details[data-method="sign_up"] svg.lock.open').count() === 1, 'sign_up has an open lock');
  check((await accessMark(page, 'sign_up')) === 'open', 'sign_up is marked open');
  check((await accessMark(page, 'require_scopes')).startsWith('locked'), 'require_scopes is marked locked when signed out');

  // The embedder's description with markup is shown as text and never runs.
  const xss = page.locator('details[data-method="xss_probe"]');
  await xss.locator('summary').first().click();
  const description = await xss.locator('.description').textContent();
  check(description.includes('<script>') && description.includes('<img src=x onerror='), 'markup in a description is shown as text');
  const made = await xss.locator('.description *').evaluateAll((nodes) => nodes.map((n) => n.tagName.toLowerCase()));
  check(made.every((tag) => ['p', 'code', 'strong', 'em', 'a'].includes(tag)), `the description made only Markdown's elements (${made.join(' ')})`);
  check(await xss.locator('.description p').count() === 2, 'a blank line makes two paragraphs');
  check((await xss.locator('.description code').textContent()) === 'note', '`code` is rendered as code');
  check((await xss.locator('.description strong').textContent()) === 'echoed', '**bold** is rendered as strong');
  check((await xss.locator('.description em').textContent()) === 'as is', '*em* is rendered as em');
  const links = await xss.locator('.description a').evaluateAll((nodes) => nodes.map((a) => [a.textContent, a.getAttribute('href'), a.rel]));
  check(links.length === 1 && links[0][0] === 'the spec' && links[0][1] === 'https://www.jsonrpc.org/specification' && links[0][2].includes('noopener'),
    'an https link is a link (noopener)');
  check(description.includes("[this](javascript:window.__xss='md')"), 'a javascript: link stays text');
  check(await page.evaluate(() => window.__xss === undefined), 'no injected script ran');

  // Schemas expand, resolved from components.schemas.
  const resultSchema = xss.locator('.result-type details.schema');
  check(!(await resultSchema.locator('pre').isVisible()), 'the result schema is folded');
  await resultSchema.locator('summary').first().click();
  const resultText = await resultSchema.locator('pre.schema-text').textContent();
  check(resultText.includes('note: string') && resultText.includes('count: integer') && resultText.includes('tags: array of string'),
    `the result schema expands to its fields (${resultText.split('\n')[0]})`);
  check(resultText.includes('<b onmouseover=') && await resultSchema.locator('pre *').count() === 0, 'schema docs are text, never HTML');
  const caller = page.locator('details[data-method="get_caller"]');
  await caller.locator('summary').first().click();
  await caller.locator('.result-type details.schema summary').click();
  check((await caller.locator('.result-type pre.schema-text').textContent()).includes('username: string'), "get_caller's result schema names username");
  const scoped = page.locator('details[data-method="require_scopes"]');
  await scoped.locator('summary').first().click();
  const dataSchemas = scoped.locator('table.errors details.schema');
  check(await dataSchemas.count() >= 1, 'error data has an expandable schema');
  await dataSchemas.first().locator('summary').first().click();
  check((await dataSchemas.first().locator('pre').textContent()).length > 0, 'the error data schema expands');

  // Deep links: opening a method puts it in the address.
  check(new URL(page.url()).hash === '#require_scopes', 'opening a method updates the hash');
  await caller.locator('summary').first().click();
  await scoped.locator('summary').first().click();
  const deep = await context.newPage();
  deep.on('pageerror', (err) => pageErrors.push(err.message));
  await deep.goto(`${docsUrl}#get_caller`);
  await deep.waitForSelector('body[data-ready="true"]');
  check(await deep.locator('details[data-method="get_caller"]').evaluate((d) => d.open), '/docs#get_caller opens get_caller');
  const box = await deep.locator('details[data-method="get_caller"] summary').first().boundingBox();
  check(box && box.y >= 0 && box.y < 768, '/docs#get_caller scrolls it into view');
  const openrpc = await deep.getAttribute('#openrpc-link', 'href');
  check(openrpc === new URL('openrpc.json', serverUrl).href, 'the header links to /openrpc.json');
  const doc = await (await fetch(openrpc)).json();
  check(doc.openrpc && Array.isArray(doc.methods), '/openrpc.json answers the document');
  await deep.close();
  await xss.locator('summary').first().click();

  // The filter narrows the list.
  await page.fill('#filter', 'scope1');
  check(await page.locator('details[data-method="require_scopes"]').isVisible(), 'filter keeps require_scopes');
  check(!(await page.locator('details[data-method="sign_up"]').isVisible()), 'filter hides sign_up');
  await page.fill('#filter', '');
  await shot(page, 'docs-page-signed-out.png');

  // A secured call without a token: -32001 missing_token.
  const anonymous = await tryIt(page, 'get_caller');
  check(anonymous.error && anonymous.error.code === -32001 && anonymous.error.data.reason === 'missing_token', 'get_caller signed out answers -32001 missing_token');

  // --- sign up, then Authorize with username and password ---
  await page.click('#authorize');
  await page.fill('#sign-up-username', USER);
  await page.fill('#sign-up-password', PASSWORD);
  await page.click('#sign-up');
  await page.waitForFunction(() => document.getElementById('identity').textContent.startsWith('Signed in as'));
  check(true, 'sign-up signs in right after');
  check(!(await page.locator('#auth-dialog').isVisible()), 'the dialog closes after sign-up');
  check((await page.textContent('#status')) === `Account created: ${USER}, and signed in.`, 'the status says the account was created and signed in');
  const statusBox = await page.locator('#status').boundingBox();
  check(statusBox && statusBox.y >= 0 && statusBox.y + statusBox.height <= 768, 'the message is in view at 1366×768');
  check((await page.textContent('#identity')).includes(USER), 'the header names the signed-in user');
  check((await accessMark(page, 'require_scopes')) === 'you lack scope1', 'require_scopes is marked "you lack scope1"');
  check((await accessMark(page, 'get_caller')) === 'allowed', 'get_caller is marked allowed');
  const stored = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length, cookie: document.cookie }));
  check(stored.session === 1 && stored.local === 0 && stored.cookie === '', 'the token is in sessionStorage only (no localStorage, no cookie)');
  check((await context.cookies()).length === 0, 'no cookie at all');
  await page.evaluate(() => {
    for (const d of document.querySelectorAll('details[open]')) d.open = false;
    window.scrollTo(0, 0);
  });
  await shot(page, 'docs-page-authorized.png');

  // --- calls over HTTP ---
  const me = await tryIt(page, 'get_caller');
  check(me.answer.result && me.answer.result.username === USER, 'get_caller shows the user');
  check(me.request.includes('POST ') && me.request.includes('Authorization: Bearer '), 'the request shown names POST and the Bearer header');
  const lastPost = rpcPosts.filter((p) => p.body && p.body.includes('"get_caller"')).pop();
  check(lastPost && /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/.test(lastPost.auth), 'the call carried Authorization: Bearer <jwt>');
  const token = lastPost.auth.slice('Bearer '.length);

  // Copy as curl: the token as $TOKEN until revealed; the command runs.
  const callerForm = page.locator('details[data-method="get_caller"]');
  await callerForm.locator('button.copy-curl').click();
  const curl = await callerForm.locator('pre.curl').textContent();
  check(curl.includes('-H "Authorization: Bearer $TOKEN"') && !curl.includes(token), 'copy as curl shows the token as $TOKEN');
  const ran = execFileSync('sh', ['-c', curl], { env: { ...process.env, TOKEN: token } }).toString();
  check(JSON.parse(ran).result.username === USER, 'the curl command, run with $TOKEN set, answers the user');
  await callerForm.locator('button.reveal').click();
  const revealed = await callerForm.locator('pre.curl').textContent();
  check(revealed.includes(token) && !revealed.includes('$TOKEN'), 'Reveal the token puts it in the command');
  check(JSON.parse(execFileSync('sh', ['-c', revealed]).toString()).result.username === USER, 'the revealed command answers the user');
  await callerForm.locator('button.copy-curl').click();
  check((await callerForm.locator('pre.curl').textContent()).includes('$TOKEN'), 'copying again hides the token again');
  await page.evaluate(() => document.querySelector('details[data-method="get_caller"] pre.response').scrollIntoView({ block: 'end' }));
  await shot(page, 'docs-page-answer.png');

  const denied = await tryIt(page, 'require_scopes');
  check(denied.error && denied.error.code === -32099 && denied.error.message === 'Permission error', 'require_scopes answers -32099 Permission error');
  check(JSON.stringify(denied.error.data) === JSON.stringify({ missing_scopes: { Bearer: ['scope1'] } }), 'the error shows data.missing_scopes');
  await page.evaluate(() => document.querySelector('details[data-method="require_scopes"] pre.response').scrollIntoView({ block: 'end' }));
  await shot(page, 'docs-page-error.png');

  // --- the scope granted through the CLI ---
  console.log(`GRANT ${USER} scope1`);
  const granted = await stdinLines.next();
  check(!granted.done && granted.value.trim() === 'granted', 'the test granted scope1 with `rpcguard user grant`');
  const allowed = await tryIt(page, 'require_scopes');
  check(allowed.answer.result === true, 'require_scopes answers true after the grant');
  await page.waitForFunction(() => document.querySelector('details[data-method="require_scopes"] summary .access').textContent === 'allowed');
  check(true, 'require_scopes is then marked allowed');

  // --- a WebSocket session ---
  await page.selectOption('#transport', 'ws');
  const overWs = await tryIt(page, 'get_caller');
  check(overWs.answer.result && overWs.answer.result.username === USER, 'get_caller over WebSocket shows the user');
  check(overWs.request.startsWith('WebSocket message on ws://'), 'the request shown is a WebSocket message');
  check(sockets.length === 1 && new URL(sockets[0]).searchParams.get('access_token'), 'the session was opened with ?access_token=');
  const wsScopes = await tryIt(page, 'require_scopes');
  check(wsScopes.answer.result === true, 'require_scopes over WebSocket answers true');

  // --- sign out ---
  await page.click('#sign-out');
  await page.waitForFunction(() => document.getElementById('identity').textContent === 'Not signed in');
  check(true, 'Sign out forgets the token');
  const signOutListed = await page.locator('details[data-method="sign_out"]').count() === 1;
  const signOutCalls = rpcPosts.filter((p) => p.body && p.body.includes('"method":"sign_out"'));
  if (signOutListed) {
    check(signOutCalls.length === 1 && signOutCalls[0].auth && signOutCalls[0].auth.startsWith('Bearer '), 'Sign out called sign_out with the token (the document lists it)');
  } else {
    check(signOutCalls.length === 0, 'Sign out did not call sign_out (the document does not list it)');
  }
  check(await page.evaluate(() => sessionStorage.length) === 0, 'sessionStorage is empty after sign-out');
  check((await accessMark(page, 'get_caller')).startsWith('locked'), 'get_caller is locked again');
  const afterSignOut = await tryIt(page, 'get_caller');
  check(afterSignOut.error && afterSignOut.error.code === -32001, 'get_caller after sign-out answers -32001 (a new session, no token)');
  check(sockets.length === 2 && !new URL(sockets[1]).searchParams.has('access_token'), 'the new WebSocket session carries no token');

  // --- behind a proxy, under a path prefix ---
  const proxy = await startPrefixProxy(serverUrl);
  const proxied = `http://127.0.0.1:${proxy.address().port}/rpc/docs`;
  const prefixed = await context.newPage();
  prefixed.on('pageerror', (err) => pageErrors.push(err.message));
  await prefixed.goto(proxied);
  await prefixed.waitForSelector('body[data-ready="true"]');
  check((await prefixed.textContent('#status')).includes('/rpc/'), 'under /rpc/ the page calls rpc.discover at /rpc/');
  check(await prefixed.locator('details[data-method="get_caller"]').count() === 1, 'under /rpc/ the page lists the methods');
  await prefixed.selectOption('#transport', 'ws');
  const discovered = await tryIt(prefixed, 'rpc.discover');
  check(discovered.answer.result && discovered.answer.result.openrpc, 'under /rpc/ a WebSocket call goes through the proxy');
  await prefixed.selectOption('#transport', 'http');
  const viaTryIt = await tryIt(prefixed, 'sign_in', { username: USER, password: PASSWORD });
  check(typeof viaTryIt.answer.result.access_token === 'string', 'under /rpc/ sign_in through its try-it form answers a token');
  await prefixed.click('details[data-method="sign_in"] button.use-token');
  await prefixed.waitForFunction(() => document.getElementById('identity').textContent.startsWith('Signed in as'));
  check(true, '"Authorize with this token" under a sign_in answer authorizes the page');
  proxy.close();

  // --- a form with a number, a boolean and an array, from the example ---
  await page.selectOption('#transport', 'http');
  const echo = await tryIt(page, 'xss_probe');
  check(JSON.stringify(echo.answer.result) === JSON.stringify({ note: '<b>hi</b>', count: 3, loud: true, tags: ['a', 'b'] }),
    'a try-it form prefilled from the first example sends a string, a number, a boolean and an array');

  // --- what never happened ---
  check(offHost.length === 0, `no request left for a non-loopback origin (${offHost.join(', ') || 'none'})`);
  check(dialogs.length === 0, 'no dialog (alert) was opened by page content');
  check(await page.evaluate(() => window.__xss === undefined), 'still no injected script ran');
  const violations = [...await page.evaluate(() => window.__violations), ...await prefixed.evaluate(() => window.__violations)];
  check(violations.length === 0, `no Content-Security-Policy violation (${violations.join(', ') || 'none'})`);
  check(pageErrors.length === 0, `no uncaught error in the page (${pageErrors.join('; ') || 'none'})`);
} catch (err) {
  failures.push(err);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.map((e) => e.stack || String(e)).join('\n'));
  process.exit(1);
}
console.log('OK docs page: all checks passed');
process.exit(0);
