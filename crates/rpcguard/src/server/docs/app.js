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
  const RPC_URL = new URL('./', window.location.href);

  const state = {
    doc: null,
    token: null,
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
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function saveToken(token) {
    state.token = token;
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (private mode): the token stays in memory only.
    }
    closeSocket(); // a session is bound to the token presented at its upgrade
  }

  // ---- transports ----

  function request(method, params) {
    const body = { jsonrpc: '2.0', id: state.nextId++, method };
    if (params !== undefined) body.params = params;
    return body;
  }

  async function sendHttp(body, token) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
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
    if (token) url.searchParams.set('access_token', token);
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
    const { answer } = await sendHttp(request(method, params), token);
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

  // ---- rendering ----

  function render() {
    const doc = state.doc;
    const info = doc.info || {};
    $('title').textContent = info.title || 'API docs';
    document.title = `${info.title || 'API'} — docs`;
    $('version').textContent = info.version ? `v${info.version} · OpenRPC ${doc.openrpc || ''}` : '';
    $('description').textContent = info.description || '';
    $('auth-sign-in').hidden = !methodNamed('sign_in');
    $('auth-sign-up').hidden = !methodNamed('sign_up');
    const bearer = doc.components && doc.components['x-securitySchemes'] && doc.components['x-securitySchemes'].Bearer;
    $('auth-scheme').textContent = bearer && bearer.description ? bearer.description : '';

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
    if (method.description) body.append(el('p', { class: 'description', text: method.description }));
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
          el('td', { text: typeLabel(p.schema) }),
          el('td', { text: p.required ? 'yes' : 'no' }),
          el('td', { text: [p.description, resolve(p.schema).description].filter(Boolean).join(' ') }))))));
    }

    if (method.result) {
      body.append(el('h4', { text: 'Result' }),
        el('p', {}, el('code', { text: typeLabel(method.result.schema) }),
          method.result.name && method.result.name !== typeLabel(method.result.schema) ? ` (${method.result.name})` : '',
          method.result.description ? ` — ${method.result.description}` : ''));
    }

    const errors = method.errors || [];
    if (errors.length) {
      body.append(el('h4', { text: 'Errors' }),
        el('table', { class: 'errors' },
          el('thead', {}, el('tr', {}, ['Code', 'Message', 'Data'].map((h) => el('th', { text: h })))),
          el('tbody', {}, errors.map((e) => el('tr', {},
            el('td', {}, el('code', { text: String(e.code) })),
            el('td', { text: e.message || '' }),
            el('td', { text: e.data !== undefined ? typeLabel(e.data) : '' }))))));
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
    button.addEventListener('click', async () => {
      let params;
      try {
        params = {};
        for (const [p, field] of fields) {
          const value = field.read();
          if (value !== undefined) params[p.name] = value;
        }
      } catch (err) {
        showLocalError(result, requestOut, answerOut, errorOut, err);
        return;
      }
      const body = request(method.name, fields.length ? params : undefined);
      const transport = state.transport;
      requestOut.textContent = describeRequest(body, transport);
      answerOut.textContent = '…';
      errorOut.hidden = true;
      result.hidden = false;
      button.disabled = true;
      try {
        const { status, answer } = await send(body, transport);
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
      el('div', { class: 'actions' }, button),
      result);
  }

  function describeRequest(body, transport) {
    const shownToken = state.token ? `Bearer ${state.token.slice(0, 12)}…` : null;
    const lines = [];
    if (transport === 'ws') {
      const url = wsUrl(null).href;
      lines.push(`WebSocket message on ${url}${shownToken ? ' (session opened with ?access_token=…)' : ' (no token)'}`);
    } else {
      lines.push(`POST ${RPC_URL.href}`, 'Content-Type: application/json');
      if (shownToken) lines.push(`Authorization: ${shownToken}`);
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
    button.onclick = button.hidden ? null : () => authorizeWith(token);
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
    if (!state.token) identity.textContent = 'Not signed in';
    else if (state.caller) {
      const scopes = Object.entries(state.caller.scopes || {})
        .map(([scheme, list]) => `${scheme}: ${list.length ? list.join(', ') : 'no scopes'}`).join('; ');
      identity.textContent = `Signed in as ${state.caller.username}${scopes ? ` (${scopes})` : ''}`;
    } else identity.textContent = 'Authorized with a token';
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
      if (err.rpc && err.rpc.code === -32001) {
        setStatus(`The token is not accepted (${(err.rpc.data && err.rpc.data.reason) || err.rpc.message}): authorize again.`, true);
      }
    }
    refreshMarks();
  }

  function authMessage(text, isError) {
    const message = $('auth-message');
    message.textContent = text;
    message.classList.toggle('error', Boolean(isError));
  }

  function errorText(err) {
    if (!err.rpc) return err.message;
    const data = err.rpc.data === undefined ? '' : ` ${JSON.stringify(err.rpc.data)}`;
    return `${err.rpc.code} ${err.rpc.message}${data}`;
  }

  async function authorizeWith(token) {
    saveToken(token);
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
      await authorizeWith(token.access_token);
      authMessage(`Signed in as ${username}.`);
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
      authMessage(`Account created: ${user.username}. Now sign in with its password.`);
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
    if (state.token) await refreshCaller();
    document.body.dataset.ready = 'true';
  }

  start();
})();
