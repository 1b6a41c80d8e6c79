// CORS in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core): a page served from an origin the server lists
// (--cors-origin) calls `get_caller` with a bearer token (a preflighted
// request: `Authorization` and a JSON body) and reads the answer, and reads
// GET /openrpc.json; the same page served from an origin not listed cannot
// (its fetch rejects).
//
//   node cors.mjs SERVER_URL CHROMIUM_PATH ALLOWED_PAGE_URL OTHER_PAGE_URL TOKEN
//
// Ends with `OK cors: all checks passed`.

import { chromium } from 'playwright-core';

const [serverUrl, chromiumPath, allowedPage, otherPage, token] = process.argv.slice(2);
if (!serverUrl || !chromiumPath || !allowedPage || !otherPage || !token) {
  console.error('usage: node cors.mjs SERVER_URL CHROMIUM_PATH ALLOWED_PAGE_URL OTHER_PAGE_URL TOKEN');
  process.exit(2);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

/** Opens `pageUrl`, and from it calls get_caller and fetches the
 *  document on the server; what each gave (an answer or an error). */
async function fromPage(page, pageUrl) {
  await page.goto(pageUrl);
  return page.evaluate(async ({ server, token }) => {
    const out = {};
    try {
      const response = await fetch(server, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'get_caller' }),
      });
      out.call = await response.json();
    } catch (e) {
      out.callError = String(e);
    }
    try {
      const response = await fetch(`${server}openrpc.json`);
      out.openrpc = (await response.json()).openrpc;
    } catch (e) {
      out.openrpcError = String(e);
    }
    return out;
  }, { server: serverUrl, token });
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));

  const allowed = await fromPage(page, allowedPage);
  check(!allowed.callError, `listed origin: get_caller is not blocked (${allowed.callError ?? 'ok'})`);
  check(allowed.call?.result?.username === 'cors_user', `listed origin reads the caller: ${JSON.stringify(allowed.call)}`);
  check(allowed.openrpc === '1.3.2', `listed origin reads /openrpc.json (${allowed.openrpcError ?? allowed.openrpc})`);

  const other = await fromPage(page, otherPage);
  check(other.callError !== undefined && other.call === undefined, `other origin: get_caller rejected (${other.callError})`);
  check(other.openrpcError !== undefined, `other origin: /openrpc.json rejected (${other.openrpcError})`);
  check(
    consoleErrors.some((e) => e.includes('CORS')),
    'the browser says CORS blocked the other origin',
  );
  console.log('OK cors: all checks passed');
} finally {
  await browser.close();
}
