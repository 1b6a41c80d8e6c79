// rpcguard's docs page: reads the live OpenRPC document (rpc.discover),
// lists every method, signs in, and sends calls over HTTP or WebSocket.
//
// Plain JavaScript, no dependency, no build step. Every piece of server
// data enters the page through textContent (el()/text()), never as HTML.
// Every URL is relative to the page, so a path prefix added by a proxy is
// kept: the JSON-RPC endpoint is the page's directory.
'use strict';

(() => {
  const TOKEN_KEY = 'rpcguard-docs.token';
  // Refresh this long before `exp` (or a fifth of the token's life when
  // that is shorter).
  const REFRESH_EARLY_MS = 30000;
  const RPC_URL = new URL('./', window.location.href);

  const state = {
    doc: null,
    token: null,
    // The credential: {scheme, kind: 'bearer'|'apiKey', header, refresh,
    // exp (ms), life (ms)}; the secret itself is `token`.
    auth: null,
    refreshTimer: null,
    refreshing: null,
    ended: false,
    renewedAt: null,
    caller: null, // the answer of get_caller, when the document has it
    transport: 'http',
    ws: null,
    wsReady: null,
    wsPending: new Map(),
    nextId: 1,
  };

  // ---- DOM helpers (text only) ----

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  const pretty = (value) => JSON.stringify(value, null, 2);

  function setStatus(message, isError) {
    const status = $('status');
    status.textContent = message;
    status.classList.toggle('error', Boolean(isError));
  }

  // ---- token (this tab only) ----

  function loadToken() {
    try {
      const saved = JSON.parse(window.sessionStorage.getItem(TOKEN_KEY) || 'null');
      if (saved && typeof saved.token === 'string' && saved.auth && typeof saved.auth === 'object') {
        state.auth = saved.auth;
        return saved.token;
      }
    } catch (_) {
      // Nothing usable saved.
    }
    return null;
  }

  /** Keeps `token` (and its credential `auth`) in this tab only. */
  function saveToken(token, auth) {
    state.token = token;
    state.auth = token ? auth || { scheme: 'Bearer', kind: 'bearer', header: 'Authorization' } : null;
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token, auth: state.auth }));
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (private mode): the token stays in memory only.
    }
    scheduleRefresh();
    closeSocket(); // a session is bound to the token presented at its upgrade
  }

  /** The headers that carry the credential. */
  function authHeaders(token, auth) {
    if (!token) return {};
    if (auth && auth.kind === 'apiKey') return { [auth.header]: token };
    return { Authorization: `Bearer ${token}` };
  }

  /** `exp` of a JWT, in ms, when it can be read. */
  function jwtExp(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const exp = JSON.parse(atob(part)).exp;
      return typeof exp === 'number' ? exp * 1000 : null;
    } catch (_) {
      return null;
    }
  }

  /** The credential of a Token answer (sign_in's, refresh's). */
  function bearerFrom(answer) {
    const life = typeof answer.expires_in === 'number' ? answer.expires_in * 1000 : null;
    return {
      scheme: 'Bearer',
      kind: 'bearer',
      header: 'Authorization',
      refresh: typeof answer.refresh_token === 'string' ? answer.refresh_token : null,
      exp: life ? Date.now() + life : jwtExp(answer.access_token),
      life,
    };
  }

  // ---- keeping the session ----

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    const auth = state.auth;
    if (!state.token || !auth || !auth.refresh || !auth.exp || !methodNamed('refresh')) return;
    const early = Math.min(REFRESH_EARLY_MS, (auth.life || REFRESH_EARLY_MS * 5) / 5);
    const wait = Math.max(0, auth.exp - early - Date.now());
    state.refreshTimer = setTimeout(() => renewSession('before exp'), wait);
  }

  /** Trades the refresh token for new tokens; true when it did. When the
   *  server refuses (revoked, reused, invalid), the session has ended. */
  function renewSession(why) {
    if (state.refreshing) return state.refreshing;
    const auth = state.auth;
    if (!auth || !auth.refresh || !methodNamed('refresh')) return Promise.resolve(false);
    state.refreshing = (async () => {
      try {
        const { answer } = await sendHttp(request('refresh', { refresh_token: auth.refresh }), null);
        // Signed out or authorized anew meanwhile: that credential wins.
        if (state.auth !== auth) return Boolean(state.token);
        const result = answer && answer.result;
        if (result && typeof result.access_token === 'string') {
          state.renewedAt = new Date();
          state.renewedWhy = why;
          saveToken(result.access_token, bearerFrom(result));
          renderIdentity();
          return true;
        }
        const reason = answer && answer.error && answer.error.data && answer.error.data.reason;
        sessionEnded(reason || (answer && answer.error && answer.error.message) || 'no answer');
        return false;
      } catch (err) {
        setStatus(`Could not renew the session: ${err.message}`, true);
        return false;
      } finally {
        state.refreshing = null;
      }
    })();
    return state.refreshing;
  }

  /** The server ended the session: say so instead of "Authorized". */
  function sessionEnded(reason) {
    state.caller = null;
    saveToken(null);
    state.ended = true;
    setStatus(`Signed out: the session ended (${reason}). Authorize again to go on.`, true);
    refreshMarks();
  }

  const authReason = (answer) => answer && answer.error && answer.error.code === -32001
    && answer.error.data && answer.error.data.reason;

  /** Sends `body`; on `expired_token` renews the session and sends it once
   *  more; on `revoked_token` shows that the session ended. */
  async function sendKeepingSession(body, transport) {
    let sent = await send(body, transport);
    const reason = authReason(sent.answer);
    if (reason === 'expired_token' && state.auth && state.auth.refresh) {
      if (await renewSession('after expired_token')) {
        sent = await send(body, transport);
        sent.retried = true;
      }
    } else if (reason === 'revoked_token' && state.token) {
      sessionEnded(reason);
    }
    return sent;
  }

  // ---- transports ----

  function request(method, params) {
    const body = { jsonrpc: '2.0', id: state.nextId++, method };
    if (params !== undefined) body.params = params;
    return body;
  }

  async function sendHttp(body, token, auth) {
    const headers = Object.assign({ 'Content-Type': 'application/json' }, authHeaders(token, auth || state.auth));
    const response = await fetch(RPC_URL, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    const text = await response.text();
    if (!text) return { status: response.status, answer: null };
    try {
      return { status: response.status, answer: JSON.parse(text) };
    } catch (_) {
      throw new Error(`HTTP ${response.status}: not JSON: ${text.slice(0, 200)}`);
    }
  }

  function wsUrl(token) {
    const url = new URL(RPC_URL.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (token && (!state.auth || state.auth.kind !== 'apiKey')) url.searchParams.set('access_token', token);
    return url;
  }

  function closeSocket() {
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      state.wsReady = null;
      ws.close(1000);
    }
    updateTransportNote();
  }

  function openSocket() {
    if (state.wsReady) return state.wsReady;
    const ws = new WebSocket(wsUrl(state.token));
    state.ws = ws;
    state.wsReady = new Promise((resolve, reject) => {
      ws.addEventListener('open', () => {
        updateTransportNote();
        resolve(ws);
      });
      ws.addEventListener('error', () => reject(new Error('the WebSocket session could not be opened')));
    });
    ws.addEventListener('message', (event) => {
      let answer;
      try {
        answer = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      const pending = state.wsPending.get(answer && answer.id);
      if (pending) {
        state.wsPending.delete(answer.id);
        pending.resolve({ status: 'WebSocket', answer });
      }
    });
    ws.addEventListener('close', (event) => {
      for (const pending of state.wsPending.values()) {
        pending.reject(new Error(`the WebSocket session closed (code ${event.code})`));
      }
      state.wsPending.clear();
      if (state.ws === ws) {
        state.ws = null;
        state.wsReady = null;
      }
      updateTransportNote();
    });
    return state.wsReady;
  }

  async function sendWs(body) {
    const ws = await openSocket();
    return new Promise((resolve, reject) => {
      state.wsPending.set(body.id, { resolve, reject });
      ws.send(JSON.stringify(body));
    });
  }

  /** Sends one call on the chosen transport; resolves to {status, answer}. */
  function send(body, transport) {
    return (transport || state.transport) === 'ws' ? sendWs(body) : sendHttp(body, state.token);
  }

  /** A call whose result the page itself needs (always over HTTP). */
  async function call(method, params, token) {
    let { answer } = await sendHttp(request(method, params), token);
    if (token && token === state.token && authReason(answer) === 'expired_token' && (await renewSession('after expired_token'))) {
      ({ answer } = await sendHttp(request(method, params), state.token));
    }
    if (!answer) throw new Error(`${method}: empty answer`);
    if (answer.error) {
      const err = new Error(`${answer.error.message} (${answer.error.code})`);
      err.rpc = answer.error;
      throw err;
    }
    return answer.result;
  }

  // ---- the document ----

  const methodNamed = (name) => (state.doc && state.doc.methods || []).find((m) => m.name === name);

  /** `schema` with its `$ref`s into components.schemas followed. */
  function resolve(schema) {
    let current = schema;
    for (let i = 0; current && current.$ref && i < 8; i++) {
      const prefix = '#/components/schemas/';
      if (!current.$ref.startsWith(prefix)) break;
      const name = current.$ref.slice(prefix.length);
      const target = state.doc.components && state.doc.components.schemas && state.doc.components.schemas[name];
      if (!target) break;
      current = Object.assign({ title: name }, target);
    }
    return current || {};
  }

  function typeLabel(schema, depth = 0) {
    if (!schema || depth > 4) return 'any';
    if (schema.$ref) {
      const name = schema.$ref.split('/').pop();
      const target = resolve(schema);
      const inner = target && !target.$ref ? typeLabel(Object.assign({}, target, { title: undefined }), depth + 1) : '';
      return inner && inner !== 'object' ? `${name} (${inner})` : name;
    }
    if (schema.title && depth > 0) return schema.title;
    const alternatives = schema.anyOf || schema.oneOf;
    if (alternatives) return alternatives.map((s) => typeLabel(s, depth + 1)).join(' | ');
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    const type = Array.isArray(schema.type) ? schema.type.join(' | ') : schema.type;
    if (type === 'array') return `array of ${typeLabel(schema.items, depth + 1)}`;
    if (type === 'object' && schema.additionalProperties && typeof schema.additionalProperties === 'object') {
      return `map of ${typeLabel(schema.additionalProperties, depth + 1)}`;
    }
    return type || 'any';
  }

  /** The security requirement of a method as a list of alternatives, each
   *  {scheme: [scopes]} with one scheme (all its scopes needed). The
   *  document writes it as an object whose schemes are alternatives, or as
   *  a list of such objects when one scheme has several alternatives. */
  function requirements(method) {
    const security = method['x-security'];
    if (!security) return [];
    const list = Array.isArray(security) ? security : [security];
    const alternatives = [];
    for (const item of list) {
      if (!item || typeof item !== 'object') continue;
      for (const [scheme, scopes] of Object.entries(item)) {
        alternatives.push({ [scheme]: Array.isArray(scopes) ? scopes : [] });
      }
    }
    return alternatives;
  }

  function describeRequirement(alternatives) {
    return alternatives
      .map((alt) => Object.entries(alt)
        .map(([scheme, scopes]) => (scopes.length ? `${scheme}: ${scopes.join(', ')}` : `${scheme} (any signed-in caller)`))
        .join(' and '))
      .join(' — or — ');
  }

  /** What the caller may do with a method: {kind, text}. */
  function access(method) {
    const alternatives = requirements(method);
    if (alternatives.length === 0) return { kind: 'open', text: 'open' };
    if (!state.token) return { kind: 'locked', text: 'locked: authorize first' };
    const scheme = state.auth && state.auth.kind === 'apiKey' ? state.auth.scheme : null;
    if (scheme && !alternatives.some((alt) => alt[scheme])) {
      return { kind: 'locked', text: `locked: needs ${describeRequirement(alternatives)}` };
    }
    if (!state.caller || !state.caller.scopes) return { kind: 'unknown', text: 'authorized; scopes unknown' };
    const held = state.caller.scopes;
    let lacking = null;
    for (const alt of alternatives) {
      const missing = [];
      let otherScheme = false;
      for (const [scheme, scopes] of Object.entries(alt)) {
        if (!held[scheme]) {
          otherScheme = true;
          continue;
        }
        for (const scope of scopes) if (!held[scheme].includes(scope)) missing.push(scope);
      }
      if (!otherScheme && missing.length === 0) return { kind: 'allowed', text: 'allowed' };
      if (!otherScheme && (!lacking || missing.length < lacking.length)) lacking = missing;
    }
    if (lacking) return { kind: 'lacking', text: `you lack ${lacking.join(', ')}` };
    return { kind: 'locked', text: `locked: needs ${describeRequirement(alternatives)}` };
  }

  // ---- Markdown (a tiny subset, built as DOM nodes) ----

  const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\[([^\]]+)\]\(([^)\s]+)\)/g;

  /** `text` with `code`, **bold**, *em* and [links](http…) as nodes; any
   *  other character, HTML included, stays text. */
  function inline(text) {
    const nodes = [];
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) nodes.push(text.slice(last, m.index));
      if (m[1] !== undefined) nodes.push(el('code', { text: m[1] }));
      else if (m[2] !== undefined) nodes.push(el('strong', { text: m[2] }));
      else if (m[3] !== undefined) nodes.push(el('em', { text: m[3] }));
      else nodes.push(safeLink(m[4], m[5]) || m[0]);
      last = m.index + m[0].length;
    }
    if (last < text.length) nodes.push(text.slice(last));
    return nodes;
  }

  /** A link only to http(s); anything else (javascript:, data:) is text. */
  function safeLink(label, href) {
    let url;
    try {
      url = new URL(href);
    } catch (_) {
      return null;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    return el('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer', text: label });
  }

  /** Paragraphs (split at blank lines) of inline Markdown. */
  function markdown(text, attrs) {
    return el('div', attrs, String(text).split(/\n\s*\n/).filter((p) => p.trim())
      .map((p) => el('p', {}, inline(p.trim()))));
  }

  // ---- schemas as text ----

  /** An outline of `schema`, its `$ref`s into components.schemas
   *  followed (each named type expanded once per branch). */
  function schemaLines(schema, indent, seen, lines) {
    const pad = '  '.repeat(indent);
    if (!schema || indent > 12) return lines;
    let s = schema;
    let named = '';
    if (s.$ref) {
      named = s.$ref.split('/').pop();
      if (seen.has(named)) {
        lines.push(`${pad}${named} (see above)`);
        return lines;
      }
      s = resolve(s);
      seen = new Set(seen).add(named);
    }
    const head = [named, typeLabel(Object.assign({}, s, { title: undefined }))].filter(Boolean);
    const facts = [];
    for (const key of ['format', 'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems', 'default']) {
      if (s[key] !== undefined) facts.push(`${key} ${JSON.stringify(s[key])}`);
    }
    lines.push(`${pad}${[...new Set(head)].join(': ')}${facts.length ? ` (${facts.join(', ')})` : ''}${s.description && indent === 0 ? ` — ${s.description}` : ''}`);
    const required = new Set(s.required || []);
    for (const [name, prop] of Object.entries(s.properties || {})) {
      const propDoc = prop.description || resolve(prop).description;
      lines.push(`${pad}  ${name}${required.has(name) ? '' : '?'}: ${typeLabel(prop)}${propDoc ? ` — ${propDoc}` : ''}`);
      const inner = resolve(prop);
      if (inner.properties || inner.items || inner.anyOf || inner.oneOf) schemaLines(prop, indent + 2, seen, lines);
    }
    if (s.items && (s.items.$ref || s.items.properties)) schemaLines(s.items, indent + 1, seen, lines);
    for (const alt of s.anyOf || s.oneOf || []) {
      if (alt.$ref || alt.properties) schemaLines(alt, indent + 1, seen, lines);
    }
    return lines;
  }

  /** The type's name, and its schema as text when expanded. */
  function schemaView(schema) {
    return el('details', { class: 'schema' },
      el('summary', {}, el('code', { text: typeLabel(schema) })),
      el('pre', { class: 'schema-text', text: schemaLines(schema, 0, new Set(), []).join('\n') }));
  }

  // ---- rendering ----

  function render() {
    const doc = state.doc;
    const info = doc.info || {};
    $('title').textContent = info.title || 'API docs';
    document.title = `${info.title || 'API'} — docs`;
    $('version').textContent = info.version ? `v${info.version} · OpenRPC ${doc.openrpc || ''}` : '';
    $('description').replaceChildren(info.description ? markdown(info.description) : '');
    $('openrpc-link').href = new URL('openrpc.json', RPC_URL).href;
    $('auth-sign-in').hidden = !methodNamed('sign_in');
    $('auth-sign-up').hidden = !methodNamed('sign_up');
    renderSchemes();

    const container = $('methods');
    const open = new Set([...container.querySelectorAll('details.method[open]')].map((d) => d.dataset.method));
    container.replaceChildren();
    const methods = doc.methods || [];
    const groups = [
      ['Public methods', methods.filter((m) => requirements(m).length === 0)],
      ['Secured methods', methods.filter((m) => requirements(m).length > 0)],
    ];
    for (const [title, list] of groups) {
      if (list.length === 0) continue;
      container.append(el('section', { class: 'group' },
        el('h2', { text: `${title} (${list.length})` }),
        list.map((m) => renderMethod(m, open.has(m.name)))));
    }
    applyFilter();
    renderIdentity();
    openFromHash();
  }

  const schemes = () => Object.entries((state.doc.components && state.doc.components['x-securitySchemes']) || {});
  const isBearer = (s) => s && (s.type === 'bearer' || (s.type === 'http' && String(s.scheme).toLowerCase() === 'bearer'));

  /** The Authorize dialog: sign-in, token and sign-up for a bearer scheme;
   *  a key field for each API-key scheme sent in a header. */
  function renderSchemes() {
    const bearer = schemes().find(([, s]) => isBearer(s));
    $('auth-bearer').hidden = !bearer;
    $('auth-sign-in').hidden = !bearer || !methodNamed('sign_in');
    $('auth-sign-up').hidden = !bearer || !methodNamed('sign_up');
    $('auth-scheme').replaceChildren(bearer && bearer[1].description ? markdown(bearer[1].description) : '');
    $('auth-keys').replaceChildren(...schemes()
      .filter(([, s]) => s && s.type === 'apiKey' && s.in === 'header' && typeof s.name === 'string')
      .map(([name, s]) => {
        const input = el('input', { type: 'password', autocomplete: 'off', 'data-scheme': name, class: 'api-key' });
        const use = () => {
          const key = input.value.trim();
          if (!key) return authMessage('Paste a key first.', true);
          input.value = '';
          authorizeWith(key, { scheme: name, kind: 'apiKey', header: s.name }).then(() => {
            authMessage(`Using the ${name} key.`);
            $('auth-dialog').close();
          });
        };
        input.addEventListener('keydown', (e) => { if (e.key === 'Enter') use(); });
        return el('section', { class: 'auth-part', 'data-scheme': name },
          el('h3', { text: `API key: ${name}` }),
          s.description ? markdown(s.description, { class: 'hint' }) : null,
          el('label', {}, `Key, sent as the ${s.name} header`, input),
          el('button', { type: 'button', class: 'use-key', 'data-scheme': name, text: `Use this ${name} key`, onclick: use }));
      }));
  }

  /** `#name` opens that method and scrolls to it. */
  function openFromHash() {
    let name;
    try {
      name = decodeURIComponent(window.location.hash.slice(1));
    } catch (_) {
      return;
    }
    const details = [...$('methods').querySelectorAll('details.method')].find((d) => d.dataset.method === name);
    if (!details) return;
    details.open = true;
    details.scrollIntoView({ block: 'start' });
  }

  /** A padlock drawn in SVG (no icon font, no image to fetch): closed
   *  for a secured method, open for a public one. */
  function lockIcon(closed) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 16 16');
    svg.setAttribute('width', '16');
    svg.setAttribute('height', '16');
    svg.setAttribute('class', `lock ${closed ? 'closed' : 'open'}`);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', closed ? 'secured' : 'public');
    const title = document.createElementNS(ns, 'title');
    title.textContent = closed ? 'secured' : 'public';
    const shackle = document.createElementNS(ns, 'path');
    shackle.setAttribute('d', closed ? 'M5 7V5a3 3 0 0 1 6 0v2' : 'M5 7V5a3 3 0 0 1 5.6-1.5');
    shackle.setAttribute('fill', 'none');
    shackle.setAttribute('stroke', 'currentColor');
    shackle.setAttribute('stroke-width', '1.6');
    const body = document.createElementNS(ns, 'rect');
    for (const [k, v] of Object.entries({ x: 3, y: 7, width: 10, height: 8, rx: 1.5, fill: 'currentColor' })) body.setAttribute(k, String(v));
    svg.append(title, shackle, body);
    return svg;
  }

  function renderMethod(method, isOpen) {
    const alternatives = requirements(method);
    const mark = access(method);
    const details = el('details', { class: `method access-${mark.kind}`, 'data-method': method.name, open: isOpen });
    details.append(el('summary', {},
      lockIcon(alternatives.length > 0),
      el('code', { class: 'name', text: method.name }),
      el('span', { class: 'summary', text: method.summary || '' }),
      el('span', { class: `access ${mark.kind}`, 'data-access': mark.kind, text: mark.text })));

    const body = el('div', { class: 'body' });
    if (method.description) body.append(markdown(method.description, { class: 'description' }));
    body.append(el('p', { class: 'security' },
      el('strong', { text: 'Security: ' }),
      alternatives.length ? describeRequirement(alternatives) : 'public (no credentials needed)'));

    body.append(el('h4', { text: 'Params' }));
    const params = method.params || [];
    if (params.length === 0) body.append(el('p', { class: 'none', text: 'none' }));
    else {
      body.append(el('table', { class: 'params' },
        el('thead', {}, el('tr', {}, ['Name', 'Type', 'Required', 'Description'].map((h) => el('th', { text: h })))),
        el('tbody', {}, params.map((p) => el('tr', {},
          el('td', {}, el('code', { text: p.name })),
          el('td', {}, schemaView(p.schema)),
          el('td', { text: p.required ? 'yes' : 'no' }),
          el('td', {}, markdown([p.description, resolve(p.schema).description].filter(Boolean).join(' '))))))));
    }

    if (method.result) {
      body.append(el('h4', { text: 'Result' }),
        el('div', { class: 'result-type' }, schemaView(method.result.schema),
          method.result.name && method.result.name !== typeLabel(method.result.schema) ? el('span', { text: `(${method.result.name})` }) : null,
          method.result.description ? markdown(method.result.description) : null));
    }

    const errors = method.errors || [];
    if (errors.length) {
      body.append(el('h4', { text: 'Errors' }),
        el('table', { class: 'errors' },
          el('thead', {}, el('tr', {}, ['Code', 'Message', 'Data'].map((h) => el('th', { text: h })))),
          el('tbody', {}, errors.map((e) => el('tr', {},
            el('td', {}, el('code', { text: String(e.code) })),
            el('td', { text: e.message || '' }),
            el('td', {}, e.data !== undefined ? schemaView(e.data) : ''))))));
    }

    const examples = method.examples || [];
    if (examples.length) {
      body.append(el('h4', { text: 'Examples' }));
      for (const example of examples) {
        const params = {};
        for (const p of example.params || []) params[p.name] = p.value;
        body.append(el('div', { class: 'example' },
          el('p', { text: example.name || example.summary || '' }),
          el('pre', { text: pretty({ jsonrpc: '2.0', id: 1, method: method.name, params }) }),
          example.result ? el('pre', { text: pretty({ jsonrpc: '2.0', id: 1, result: example.result.value }) }) : null));
      }
    }

    body.append(renderTryIt(method));
    details.append(body);
    // Opening a method puts it in the address (a deep link to share).
    details.querySelector('summary').addEventListener('click', () => {
      if (!details.open) history.replaceState(null, '', `#${encodeURIComponent(method.name)}`);
    });
    return details;
  }

  /** A form field per param; returns the element and a reader. */
  function paramField(param, prefill) {
    const schema = resolve(param.schema);
    const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
    const id = `p-${Math.random().toString(36).slice(2)}`;
    const hasPrefill = prefill !== undefined;
    let input;
    let read;
    if (type === 'boolean') {
      input = el('select', { id, 'data-param': param.name },
        param.required ? null : el('option', { value: '', text: '(leave out)' }),
        el('option', { value: 'true', text: 'true' }),
        el('option', { value: 'false', text: 'false' }));
      if (hasPrefill) input.value = String(prefill);
      read = () => (input.value === '' ? undefined : input.value === 'true');
    } else if (type === 'integer' || type === 'number') {
      input = el('input', { id, type: 'number', step: type === 'integer' ? '1' : 'any', 'data-param': param.name });
      if (hasPrefill) input.value = String(prefill);
      read = () => {
        if (input.value.trim() === '') return undefined;
        const n = Number(input.value);
        if (!Number.isFinite(n)) throw new Error(`${param.name}: not a number`);
        return n;
      };
    } else if (type === 'string' && !schema.enum) {
      const secret = /password|secret|token/i.test(param.name);
      input = el('input', { id, type: secret ? 'password' : 'text', 'data-param': param.name, autocomplete: 'off' });
      if (hasPrefill) input.value = String(prefill);
      read = () => (input.value === '' && !param.required ? undefined : input.value);
    } else {
      input = el('textarea', { id, rows: 3, spellcheck: 'false', 'data-param': param.name, placeholder: 'JSON' });
      if (hasPrefill) input.value = pretty(prefill);
      read = () => {
        if (input.value.trim() === '') return undefined;
        try {
          return JSON.parse(input.value);
        } catch (err) {
          throw new Error(`${param.name}: not valid JSON (${err.message})`);
        }
      };
    }
    const label = el('label', { for: id },
      el('code', { text: param.name }), ' ',
      el('span', { class: 'type', text: typeLabel(param.schema) }),
      param.required ? el('span', { class: 'required', text: ' required' }) : null);
    return { node: el('div', { class: 'field' }, label, input), read };
  }

  function renderTryIt(method) {
    const example = (method.examples || [])[0];
    const prefill = {};
    for (const p of (example && example.params) || []) prefill[p.name] = p.value;
    const fields = (method.params || []).map((p) => [p, paramField(p, prefill[p.name])]);
    const requestOut = el('pre', { class: 'request' });
    const answerOut = el('pre', { class: 'response' });
    const errorOut = el('dl', { class: 'rpc-error', hidden: true });
    const useToken = el('button', { type: 'button', class: 'use-token', hidden: true, text: 'Authorize with this token' });
    const result = el('div', { class: 'result', hidden: true },
      el('h5', { text: 'Request' }), requestOut,
      el('h5', { text: 'Answer' }), errorOut, answerOut, useToken);
    const button = el('button', { type: 'button', class: 'primary send', text: 'Send' });
    const curlOut = el('pre', { class: 'curl', hidden: true });
    const reveal = el('button', { type: 'button', class: 'reveal', hidden: true, text: 'Reveal the token' });
    const copy = el('button', { type: 'button', class: 'copy-curl', text: 'Copy as curl' });
    const readParams = () => {
      const params = {};
      for (const [p, field] of fields) {
        const value = field.read();
        if (value !== undefined) params[p.name] = value;
      }
      return fields.length ? params : undefined;
    };
    let revealed = false;
    const showCurl = () => {
      let params;
      try {
        params = readParams();
      } catch (err) {
        curlOut.textContent = err.message;
        curlOut.hidden = false;
        return null;
      }
      const text = curlCommand(request(method.name, params), revealed);
      curlOut.textContent = text;
      curlOut.hidden = false;
      reveal.hidden = !state.token || revealed;
      return text;
    };
    copy.addEventListener('click', () => {
      revealed = false;
      const text = showCurl();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    });
    reveal.addEventListener('click', () => {
      revealed = true;
      showCurl();
    });
    button.addEventListener('click', async () => {
      let params;
      try {
        params = readParams();
      } catch (err) {
        showLocalError(result, requestOut, answerOut, errorOut, err);
        return;
      }
      const body = request(method.name, params);
      const transport = state.transport;
      requestOut.textContent = describeRequest(body, transport);
      answerOut.textContent = '…';
      errorOut.hidden = true;
      result.hidden = false;
      button.disabled = true;
      try {
        const { status, answer, retried } = await sendKeepingSession(body, transport);
        if (retried) requestOut.textContent = `${describeRequest(body, transport)}\n\n(sent again after renewing the expired token)`;
        showAnswer(answerOut, errorOut, status, answer);
        offerToken(useToken, answer);
        if (requirements(method).length && state.token && methodNamed('get_caller')) refreshCaller();
      } catch (err) {
        answerOut.textContent = `Transport error: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });
    // Enter in a field sends the call (the form itself is never submitted).
    return el('form', { class: 'try-it', onsubmit: (e) => { e.preventDefault(); button.click(); } },
      el('h4', { text: 'Try it' }),
      fields.map(([, f]) => f.node),
      el('div', { class: 'actions' }, button, copy, reveal),
      curlOut,
      result);
  }

  const shellQuote = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;

  /** The call as a curl command; the credential as $TOKEN unless revealed. */
  function curlCommand(body, revealed) {
    const lines = [`curl -s ${shellQuote(RPC_URL.href)}`, "  -H 'Content-Type: application/json'"];
    for (const [name, value] of Object.entries(authHeaders(state.token, state.auth))) {
      const shown = revealed ? value : value.replace(state.token, '$TOKEN');
      lines.push(revealed ? `  -H ${shellQuote(`${name}: ${shown}`)}` : `  -H "${name}: ${shown}"`);
    }
    lines.push(`  -d ${shellQuote(JSON.stringify(body))}`);
    return lines.join(' \\\n');
  }

  function describeRequest(body, transport) {
    const header = Object.entries(authHeaders(state.token, state.auth))[0];
    const shownToken = header ? `${header[1].slice(0, header[1].length - state.token.length)}${state.token.slice(0, 12)}…` : null;
    const lines = [];
    if (transport === 'ws') {
      const url = wsUrl(null).href;
      const how = state.auth && state.auth.kind === 'apiKey'
        ? ' (no key: a browser cannot set headers on a WebSocket)'
        : shownToken ? ' (session opened with ?access_token=…)' : ' (no token)';
      lines.push(`WebSocket message on ${url}${how}`);
    } else {
      lines.push(`POST ${RPC_URL.href}`, 'Content-Type: application/json');
      if (shownToken) lines.push(`${header[0]}: ${shownToken}`);
    }
    lines.push('', pretty(body));
    return lines.join('\n');
  }

  function showAnswer(answerOut, errorOut, status, answer) {
    answerOut.textContent = `${status === 'WebSocket' ? 'WebSocket' : `HTTP ${status}`}\n\n${answer === null ? '(no content)' : pretty(answer)}`;
    if (answer && answer.error) {
      errorOut.replaceChildren(
        el('dt', { text: 'code' }), el('dd', { class: 'error-code', text: String(answer.error.code) }),
        el('dt', { text: 'message' }), el('dd', { class: 'error-message', text: String(answer.error.message) }),
        el('dt', { text: 'data' }), el('dd', {}, el('code', { class: 'error-data', text: answer.error.data === undefined ? '(none)' : JSON.stringify(answer.error.data) })));
      errorOut.hidden = false;
    } else {
      errorOut.hidden = true;
    }
  }

  /** An answer that is a token (sign_in's, refresh's) can authorize the
   *  page in one click. */
  function offerToken(button, answer) {
    const token = answer && answer.result && answer.result.access_token;
    button.hidden = typeof token !== 'string';
    button.onclick = button.hidden ? null : () => authorizeWith(token, bearerFrom(answer.result));
  }

  function showLocalError(result, requestOut, answerOut, errorOut, err) {
    requestOut.textContent = '(not sent)';
    answerOut.textContent = err.message;
    errorOut.hidden = true;
    result.hidden = false;
  }

  function applyFilter() {
    const needle = $('filter').value.trim().toLowerCase();
    for (const details of $('methods').querySelectorAll('details.method')) {
      const method = methodNamed(details.dataset.method);
      const haystack = [method.name, method.summary, method.description, describeRequirement(requirements(method))]
        .filter(Boolean).join(' ').toLowerCase();
      details.hidden = needle !== '' && !haystack.includes(needle);
    }
  }

  function renderIdentity() {
    const identity = $('identity');
    if (!state.token) identity.textContent = state.ended ? 'Signed out: the session ended' : 'Not signed in';
    else if (state.auth && state.auth.kind === 'apiKey') identity.textContent = `API key (${state.auth.scheme}) in ${state.auth.header}`;
    else if (state.caller) {
      const scopes = Object.entries(state.caller.scopes || {})
        .map(([scheme, list]) => `${scheme}: ${list.length ? list.join(', ') : 'no scopes'}`).join('; ');
      identity.textContent = `Signed in as ${state.caller.username}${scopes ? ` (${scopes})` : ''}`;
    } else identity.textContent = 'Authorized with a token';
    const note = $('session-note');
    const auth = state.auth;
    if (state.token && state.renewedAt) {
      note.textContent = `Token renewed at ${state.renewedAt.toLocaleTimeString()} (${state.renewedWhy})`;
    } else if (state.token && auth && auth.refresh && auth.exp) {
      note.textContent = `Renews itself before ${new Date(auth.exp).toLocaleTimeString()}`;
    } else note.textContent = '';
    identity.classList.toggle('ended', !state.token && state.ended);
    $('authorize').textContent = state.token ? 'Authorized' : 'Authorize';
    $('authorize').classList.toggle('authorized', Boolean(state.token));
    $('sign-out').hidden = !state.token;
    updateTransportNote();
  }

  function updateTransportNote() {
    const select = $('transport');
    select.title = state.ws && state.ws.readyState === WebSocket.OPEN ? 'WebSocket session open' : '';
  }

  function refreshMarks() {
    for (const details of $('methods').querySelectorAll('details.method')) {
      const method = methodNamed(details.dataset.method);
      const mark = access(method);
      details.className = `method access-${mark.kind}`;
      const badge = details.querySelector('summary .access');
      badge.className = `access ${mark.kind}`;
      badge.dataset.access = mark.kind;
      badge.textContent = mark.text;
    }
    renderIdentity();
  }

  // ---- authorization ----

  async function refreshCaller() {
    if (!state.token || !methodNamed('get_caller')) {
      state.caller = null;
      refreshMarks();
      return;
    }
    try {
      state.caller = await call('get_caller', undefined, state.token);
    } catch (err) {
      state.caller = null;
      if (err.rpc && err.rpc.code === -32001 && err.rpc.data && err.rpc.data.reason === 'revoked_token') {
        sessionEnded('revoked_token');
        return;
      } else if (err.rpc && err.rpc.code === -32001) {
        setStatus(`The token is not accepted (${(err.rpc.data && err.rpc.data.reason) || err.rpc.message}): authorize again.`, true);
      }
    }
    refreshMarks();
  }

  function authMessage(text, isError) {
    const message = $('auth-message');
    message.textContent = text;
    message.classList.toggle('error', Boolean(isError));
    if (text) message.scrollIntoView({ block: 'nearest' });
  }

  function errorText(err) {
    if (!err.rpc) return err.message;
    const data = err.rpc.data === undefined ? '' : ` ${JSON.stringify(err.rpc.data)}`;
    return `${err.rpc.code} ${err.rpc.message}${data}`;
  }

  async function authorizeWith(token, auth) {
    state.ended = false;
    state.renewedAt = null;
    saveToken(token, auth || { scheme: 'Bearer', kind: 'bearer', header: 'Authorization', exp: jwtExp(token) });
    await reloadDocument();
    await refreshCaller();
  }

  async function signIn() {
    const username = $('sign-in-username').value;
    const password = $('sign-in-password').value;
    authMessage('Signing in…');
    try {
      const token = await call('sign_in', { username, password });
      $('sign-in-password').value = '';
      await authorizeWith(token.access_token, bearerFrom(token));
      authMessage(`Signed in as ${username}.`);
      setStatus(`Signed in as ${username}.`);
      $('auth-dialog').close();
    } catch (err) {
      authMessage(`Sign-in failed: ${errorText(err)}`, true);
    }
  }

  async function useToken() {
    const token = $('token-input').value.trim().replace(/^bearer\s+/i, '');
    if (!token) {
      authMessage('Paste a token first.', true);
      return;
    }
    $('token-input').value = '';
    await authorizeWith(token);
    authMessage('Using the pasted token.');
    $('auth-dialog').close();
  }

  async function signUp() {
    const username = $('sign-up-username').value;
    const password = $('sign-up-password').value;
    authMessage('Creating the account…');
    try {
      const user = await call('sign_up', { username, password });
      $('sign-up-password').value = '';
      $('sign-in-username').value = user.username;
      if (!methodNamed('sign_in')) {
        authMessage(`Account created: ${user.username}.`);
        return;
      }
      authMessage(`Account created: ${user.username}. Signing in…`);
      const token = await call('sign_in', { username: user.username, password });
      await authorizeWith(token.access_token, bearerFrom(token));
      setStatus(`Account created: ${user.username}, and signed in.`);
      $('auth-dialog').close();
    } catch (err) {
      authMessage(`Sign-up failed: ${errorText(err)}`, true);
    }
  }

  async function signOut() {
    const token = state.token;
    // End the session on the server when it offers that; either way the
    // page forgets the token.
    if (token && methodNamed('sign_out')) {
      try {
        await call('sign_out', {}, token);
      } catch (err) {
        setStatus(`sign_out answered ${errorText(err)}; the page forgot the token anyway.`, true);
      }
    }
    state.caller = null;
    state.ended = false;
    saveToken(null);
    await reloadDocument();
    refreshMarks();
  }

  // ---- start ----

  async function reloadDocument() {
    try {
      const doc = await call('rpc.discover', undefined, state.token);
      if (!doc || !Array.isArray(doc.methods)) throw new Error('rpc.discover did not answer an OpenRPC document');
      state.doc = doc;
      setStatus(`${doc.methods.length} methods, from rpc.discover at ${RPC_URL.href}`);
      render();
    } catch (err) {
      setStatus(`Cannot load the API description: ${errorText(err)}`, true);
    }
  }

  function wire() {
    $('authorize').addEventListener('click', () => {
      authMessage('');
      $('auth-dialog').showModal();
    });
    $('auth-close').addEventListener('click', () => $('auth-dialog').close());
    $('sign-in').addEventListener('click', signIn);
    $('use-token').addEventListener('click', useToken);
    $('sign-up').addEventListener('click', signUp);
    $('sign-out').addEventListener('click', signOut);
    $('filter').addEventListener('input', applyFilter);
    window.addEventListener('hashchange', openFromHash);
    $('transport').addEventListener('change', (event) => {
      state.transport = event.target.value === 'ws' ? 'ws' : 'http';
      if (state.transport === 'http') closeSocket();
    });
    for (const [field, button] of [['sign-in-password', 'sign-in'], ['sign-up-password', 'sign-up']]) {
      $(field).addEventListener('keydown', (event) => {
        if (event.key === 'Enter') $(button).click();
      });
    }
  }

  async function start() {
    wire();
    state.token = loadToken();
    $('transport').value = 'http';
    await reloadDocument();
    scheduleRefresh();
    if (state.token) await refreshCaller();
    document.body.dataset.ready = 'true';
  }

  start();
})();
