// Drives rpcguard's /docs page in a headless Chromium through a whole
// session, in one of two modes:
//
//   node docs-session.mjs SERVER_URL CHROMIUM_PATH expiry
//     The server runs with a short --token-ttl (3 s). Sign in through the
//     Authorize dialog; the page renews the token before `exp`, and when a
//     call meets `expired_token` (the page's clock held still) it renews
//     the token and sends the call again, saying so in the header. Then
//     another client signs the user out everywhere and the page shows
//     "Signed out: the session ended" instead of "Authorized", both on a
//     call's `revoked_token` and on its own refused refresh.
//
//   node docs-session.mjs SERVER_URL CHROMIUM_PATH api-key KEY
//     The server is the `api_key` example: its ApiKey scheme is authorized
//     with a pasted key, sent in the scheme's header.
//
// Ends with `OK docs session: all checks passed`.

import { chromium } from 'playwright-core';

const [serverUrl, chromiumPath, mode, key] = process.argv.slice(2);
if (!serverUrl || !chromiumPath || !['expiry', 'api-key'].includes(mode)) {
  console.error('usage: node docs-session.mjs SERVER_URL CHROMIUM_PATH expiry|api-key [KEY]');
  process.exit(2);
}
const USER = 'session_user';
const PASSWORD = 'correct horse battery';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

/** A JSON-RPC call from another client (not the page). */
async function rpc(method, params, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const answer = await fetch(serverUrl, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  return answer.json();
}

/** Opens a method, presses Send and returns what the page shows. */
async function tryIt(page, method, fill = {}) {
  const details = page.locator(`details[data-method="${method}"]`);
  if (!(await details.evaluate((d) => d.open))) await details.locator('summary').first().click();
  for (const [name, value] of Object.entries(fill)) await details.locator(`[data-param="${name}"]`).fill(value);
  await details.locator('pre.response').evaluate((pre) => { pre.textContent = ''; });
  await details.locator('button.send').click();
  await page.waitForFunction((m) => {
    const d = document.querySelector(`details[data-method="${m}"]`);
    const out = d.querySelector('pre.response');
    return out.textContent !== '' && out.textContent !== '…' && !d.querySelector('button.send').disabled;
  }, method);
  const response = await details.locator('pre.response').textContent();
  return {
    request: await details.locator('pre.request').textContent(),
    answer: JSON.parse(response.slice(response.indexOf('\n\n') + 2)),
  };
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  const sent = [];
  page.on('request', (req) => {
    if (req.method() === 'POST') sent.push({ headers: req.headers(), body: req.postData() || '' });
  });
  await page.clock.install();
  await page.goto(new URL('docs', serverUrl).href);
  await page.waitForSelector('body[data-ready="true"]');

  if (mode === 'expiry') {
    const created = await rpc('sign_up', { username: USER, password: PASSWORD });
    check(created.result && created.result.username === USER, 'another client signed the user up');
    await page.click('#authorize');
    await page.fill('#sign-in-username', USER);
    await page.fill('#sign-in-password', PASSWORD);
    await page.click('#sign-in');
    await page.waitForFunction(() => document.getElementById('identity').textContent.startsWith('Signed in as'));
    check((await page.textContent('#session-note')).startsWith('Renews itself before'), 'the header says the token renews itself');
    const stored = await page.evaluate(() => sessionStorage.getItem('rpcguard-docs.token'));
    check(JSON.parse(stored).auth.refresh.length === 43, 'the page holds the refresh token (this tab only)');

    // Before exp: the page renews the token on its own.
    const firstToken = JSON.parse(stored).token;
    await page.clock.runFor(3000);
    await page.waitForFunction(() => document.getElementById('session-note').textContent.startsWith('Token renewed'));
    check((await page.textContent('#session-note')).includes('(before exp)'), 'the header says the token was renewed before exp');
    const renewed = JSON.parse(await page.evaluate(() => sessionStorage.getItem('rpcguard-docs.token')));
    check(renewed.token !== firstToken, 'a new access token is in use');
    check(sent.some((r) => r.body.includes('"method":"refresh"') && r.body.includes(JSON.parse(stored).auth.refresh)), 'the page called refresh with its refresh token');

    // The clock held still, the token expires for the server only: the
    // call meets expired_token, the page renews and sends it again.
    await page.clock.pauseAt((await page.evaluate(() => Date.now())) + 100);
    await new Promise((resolve) => setTimeout(resolve, 4500));
    const refreshes = sent.filter((r) => r.body.includes('"method":"refresh"')).length;
    const after = await tryIt(page, 'get_caller');
    check(after.answer.result && after.answer.result.username === USER, 'a call after the token expired succeeds');
    check(after.request.includes('sent again after renewing the expired token'), 'the request shown says it was sent again after renewing');
    check(sent.filter((r) => r.body.includes('"method":"refresh"')).length === refreshes + 1, 'one refresh for the expired token');
    check((await page.textContent('#session-note')).includes('(after expired_token)'), 'the header says the token was renewed after expired_token');
    check((await page.textContent('#authorize')) === 'Authorized', 'still Authorized');

    // Another client ends every session of the user.
    const other = await rpc('sign_in', { username: USER, password: PASSWORD });
    const out = await rpc('sign_out', { everywhere: true }, other.result.access_token);
    check(out.result === true, 'another client signed out everywhere');
    const refused = await tryIt(page, 'get_caller');
    check(refused.answer.error && refused.answer.error.data.reason === 'revoked_token', 'the next call answers revoked_token');
    await page.waitForFunction(() => document.getElementById('identity').textContent === 'Signed out: the session ended');
    check(true, 'the header says "Signed out: the session ended"');
    check((await page.textContent('#authorize')) === 'Authorize', 'the button says Authorize, not Authorized');
    check(!(await page.locator('#authorize').evaluate((b) => b.classList.contains('authorized'))), 'the button is not green');
    check((await page.textContent('#status')).startsWith('Signed out: the session ended'), 'the status says the session ended');
    check(await page.evaluate(() => sessionStorage.length) === 0, 'the tokens are forgotten');

    // Signed in again, the session is ended elsewhere before the page's
    // own renewal: the refused refresh shows the end too.
    await page.click('#authorize');
    await page.fill('#sign-in-username', USER);
    await page.fill('#sign-in-password', PASSWORD);
    await page.click('#sign-in');
    await page.waitForFunction(() => document.getElementById('identity').textContent.startsWith('Signed in as'));
    check((await page.textContent('#authorize')) === 'Authorized', 'signed in again');
    const again = await rpc('sign_in', { username: USER, password: PASSWORD });
    check((await rpc('sign_out', { everywhere: true }, again.result.access_token)).result === true, 'another client signed out everywhere again');
    await page.clock.runFor(3000);
    await page.waitForFunction(() => document.getElementById('identity').textContent === 'Signed out: the session ended');
    check((await page.textContent('#status')).includes('Signed out: the session ended'), 'a refused refresh shows "Signed out: the session ended"');
    await page.clock.resume();
  } else {
    check(await page.locator('details[data-method="add_note"]').count() === 1, 'the page lists add_note');
    await page.click('#authorize');
    check(!(await page.locator('#auth-sign-in').isVisible()), 'no sign-in form (the document has no sign_in)');
    check(!(await page.locator('#auth-bearer').isVisible()), 'no bearer token field (the document has no bearer scheme)');
    const section = page.locator('section[data-scheme="ApiKey"]');
    check(await section.isVisible(), 'the dialog offers the ApiKey scheme');
    check((await section.textContent()).toLowerCase().includes('x-api-key'), 'it names the x-api-key header');
    check(await section.locator('.hint code').count() === 1, "the scheme's description is rendered Markdown");
    await section.locator('input.api-key').fill(key);
    await section.locator('button.use-key').click();
    await page.waitForFunction(() => document.getElementById('identity').textContent.startsWith('API key'));
    check((await page.textContent('#identity')) === 'API key (ApiKey) in x-api-key', 'the header says which key is in use');
    check((await page.textContent('#authorize')) === 'Authorized', 'Authorized');

    const note = await tryIt(page, 'add_note', { text: 'from the docs page' });
    check(note.answer.result && note.answer.result.author === 'writer' && note.answer.result.text === 'from the docs page', 'add_note with the key answers the note');
    check(note.request.includes('x-api-key: '), 'the request shown names the x-api-key header');
    check(!note.request.includes(key), 'the request shown does not show the whole key');
    const call = sent.filter((r) => r.body.includes('"add_note"')).pop();
    check(call && call.headers['x-api-key'] === key && !call.headers.authorization, 'the key went in x-api-key, no Authorization header');
    const notes = await tryIt(page, 'list_notes');
    check(Array.isArray(notes.answer.result) && notes.answer.result.length === 1, 'list_notes answers the note');

    const details = page.locator('details[data-method="list_notes"]');
    await details.locator('button.copy-curl').click();
    const curl = await details.locator('pre.curl').textContent();
    check(curl.includes('-H "x-api-key: $TOKEN"') && !curl.includes(key), 'copy as curl shows the key as $TOKEN');
  }
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
console.log('OK docs session: all checks passed');
process.exit(0);
