// The wagate dashboard: a client of the REST API, with no dependencies and no build step.
// It signs in with POST /api/auth/login and keeps the JWT in this tab's sessionStorage;
// every page is drawn from the API's answers. Live updates: the instance list is polled,
// and the open instance follows its Server-Sent Events stream (read with fetch, since
// EventSource cannot send an Authorization header).
//
// All text from the server goes into the page as text nodes (never as HTML), and nothing
// runs inline, so the page works under the server's strict Content-Security-Policy.
'use strict';

(() => {
  const TOKEN_KEY = 'wagate.token';
  const USER_KEY = 'wagate.user';
  /** How often the instance list (and the open webhook log) is refreshed. */
  const POLL_MS = 4000;
  /** Longest wait before the event stream is opened again after it dropped. */
  const STREAM_RETRY_MAX_MS = 15000;
  /** Events kept in the live log of an instance. */
  const EVENT_LOG_SIZE = 30;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const TABS = [
    ['connection', 'Connection'],
    ['messages', 'Messages'],
    ['webhooks', 'Webhooks'],
    ['usage', 'Usage'],
  ];
  const STATUS_LABEL = {
    connecting: 'Connecting',
    qr: 'Waiting for scan',
    connected: 'Connected',
    disconnected: 'Disconnected',
    reconnecting: 'Reconnecting',
    logged_out: 'Logged out',
    failed: 'Failed',
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: readJson(sessionStorage.getItem(USER_KEY)),
    instances: [],
    pollTimer: null,
    /** The open instance: its id, tab, event stream and what its tab shows. */
    view: null,
  };

  // ---------------------------------------------------------------------------------
  // Small helpers

  function readJson(text) {
    try {
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  }

  /** An element: attributes (`class`, `text`, `on…` handlers, others as attributes). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  function fmtNumber(n) {
    return typeof n === 'number' ? n.toLocaleString() : '0';
  }

  function fmtBytes(n) {
    if (!n) return '0 B';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  /** "79001234567@s.whatsapp.net" → "+79001234567"; groups keep their JID. */
  function chatLabel(jid) {
    if (!jid) return '';
    const [user, server] = jid.split('@');
    return server === 's.whatsapp.net' || server === 'c.us' ? `+${user}` : jid;
  }

  function chatKey(jid) {
    const [user, server] = jid.split('@');
    return server === 's.whatsapp.net' || server === 'c.us' ? user : jid;
  }

  function statusBadge(status, id) {
    return h('span', {
      class: `badge status-${status || 'unknown'}`,
      id,
      'data-status': status,
      text: STATUS_LABEL[status] || status || 'unknown',
    });
  }

  let toastTimer = null;
  function toast(message, kind = 'ok') {
    const el = $('#toast');
    el.textContent = message;
    el.className = `toast ${kind}`;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, 4000);
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** A random sandbox phone number (never one ending in 0000, which is "not on WhatsApp"). */
  function randomPhone() {
    const rest = String(Math.floor(1000000 + Math.random() * 8999999));
    return `+1 555 ${rest.slice(0, 3)} ${rest.slice(3)}`;
  }

  /** Disables a button while `work` runs. */
  async function busy(button, work) {
    button.disabled = true;
    try {
      return await work();
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Sends a request with the session's token; JSON in and out. A 401 signs out. */
  async function api(method, path, body, { raw = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, 'The server cannot be reached.', 'network');
    }
    if (res.status === 401 && state.token && path !== '/api/auth/login') {
      signOut('Your session has ended. Sign in again.');
      throw new ApiError(401, 'Signed out', 'unauthorized');
    }
    if (raw) return res;
    const data = readJson(await res.text());
    if (!res.ok) {
      throw new ApiError(res.status, data?.error || `${res.status} ${res.statusText}`, data?.code);
    }
    return data;
  }

  function reportError(e) {
    if (e instanceof ApiError && e.code === 'unauthorized' && e.message === 'Signed out') return;
    toast(e.message || String(e), 'error');
  }

  // ---------------------------------------------------------------------------------
  // Sign in and out

  function showLogin(message) {
    $('#app-view').hidden = true;
    $('#login-view').hidden = false;
    const err = $('#login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('#login-email').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const button = $('#login-submit');
    const email = $('#login-email').value.trim();
    const password = $('#login-password').value;
    await busy(button, async () => {
      try {
        const answer = await api('POST', '/api/auth/login', { email, password });
        const { id, email: e, firstName, lastName, role } = answer.user;
        state.token = answer.token;
        state.user = { id, email: e, firstName, lastName, role };
        sessionStorage.setItem(TOKEN_KEY, state.token);
        sessionStorage.setItem(USER_KEY, JSON.stringify(state.user));
        $('#login-password').value = '';
        startApp();
      } catch (err) {
        showLogin(err.status === 401 ? 'Wrong email or password.' : err.message);
      }
    });
  }

  function signOut(message) {
    state.token = null;
    state.user = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    clearInterval(state.pollTimer);
    state.pollTimer = null;
    closeView();
    state.instances = [];
    showLogin(message);
  }

  function startApp() {
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    const u = state.user || {};
    $('#who').textContent = u.email ? `${u.email} · ${u.role}` : '';
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(poll, POLL_MS);
    route();
    refreshInstances();
  }

  // ---------------------------------------------------------------------------------
  // The instance list (sidebar), refreshed by polling

  async function refreshInstances() {
    try {
      const { instances } = await api('GET', '/api/instances');
      state.instances = instances;
      drawInstanceList();
      const v = state.view;
      if (v) {
        const inst = instances.find((i) => i.id === v.id);
        if (inst) updateInstance(inst);
      }
    } catch (e) {
      if (e.status === 403) {
        $('#instance-list-empty').textContent =
          'Your account works in the WABA operator desk; it has no WhatsApp instances.';
        $('#instance-list-empty').hidden = false;
      } else {
        reportError(e);
      }
    }
  }

  function poll() {
    if (document.hidden || !state.token) return;
    refreshInstances();
    if (state.view?.instance?.node) loadOwner();
    if (state.view?.tab === 'webhooks') loadDeliveries();
  }

  function drawInstanceList() {
    const list = $('#instance-list');
    const current = state.view?.id;
    list.replaceChildren(
      ...state.instances.map((i) =>
        h(
          'li',
          { class: i.id === current ? 'selected' : '', 'data-id': i.id },
          h(
            'a',
            { href: `#/instances/${enc(i.id)}/connection` },
            h('span', { class: 'instance-name', text: i.name }),
            statusBadge(i.status),
            h('span', {
              class: 'instance-meta',
              text: `${i.engine}${i.phone ? ` · +${i.phone}` : ''}`,
            }),
          ),
        ),
      ),
    );
    $('#instance-list-empty').hidden = state.instances.length > 0;
  }

  // ---------------------------------------------------------------------------------
  // Routing: #/ (overview) and #/instances/{id}/{tab}

  function route() {
    if (!state.token) return;
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    if (parts[0] === 'instances' && parts[1]) {
      const tab = TABS.some(([t]) => t === parts[2]) ? parts[2] : 'connection';
      openInstance(parts[1], tab);
    } else {
      closeView();
      drawOverview();
    }
    drawInstanceList();
  }

  function closeView() {
    if (state.view) {
      state.view.stream?.abort();
      clearTimeout(state.view.qrTimer);
    }
    state.view = null;
  }

  // ---------------------------------------------------------------------------------
  // Overview: create an instance, usage of all instances

  function drawOverview() {
    const main = $('#main');
    const engine = h(
      'select',
      { id: 'new-instance-engine', name: 'engine' },
      h('option', { value: 'sandbox', text: 'sandbox — simulated WhatsApp, for trying things out' }),
      h('option', { value: 'wacore', text: 'wacore — real WhatsApp' }),
      h('option', { value: '', text: 'server default (WA_ENGINE)' }),
    );
    const form = h(
      'form',
      { id: 'new-instance-form', class: 'card', onsubmit: createInstance },
      h('h2', { text: 'New instance' }),
      h(
        'div',
        { class: 'grid2' },
        h('label', {}, 'Name', h('input', { id: 'new-instance-name', name: 'name', required: true, maxlength: 200, placeholder: 'Support line' })),
        h('label', {}, 'Engine', engine),
      ),
      h(
        'label',
        {},
        'Webhook URL ',
        h('span', { class: 'muted', text: '(optional)' }),
        h('input', { id: 'new-instance-webhook', name: 'webhookUrl', type: 'url', placeholder: 'https://example.com/hook' }),
      ),
      h('div', { class: 'actions' }, h('button', { id: 'create-instance', type: 'submit', class: 'primary', text: 'Create instance' })),
    );
    const period = h(
      'select',
      { id: 'usage-period', onchange: () => loadUserStats(period.value) },
      ...['week', 'month', 'year', 'all'].map((p) => h('option', { value: p, text: p, selected: p === 'month' })),
    );
    const usage = h(
      'section',
      { class: 'card' },
      h('div', { class: 'card-head' }, h('h2', { text: 'Usage' }), h('label', { class: 'inline' }, 'Period ', period)),
      h('div', { id: 'user-usage' }, h('p', { class: 'muted', text: 'Loading…' })),
    );
    main.replaceChildren(h('h1', { text: 'Overview' }), form, usage);
    loadUserStats('month');
  }

  async function createInstance(ev) {
    ev.preventDefault();
    const body = { name: $('#new-instance-name').value.trim() };
    const engine = $('#new-instance-engine').value;
    if (engine) body.engine = engine;
    const hook = $('#new-instance-webhook').value.trim();
    if (hook) body.webhookUrl = hook;
    await busy($('#create-instance'), async () => {
      try {
        const created = await api('POST', '/api/instances', body);
        toast(`Instance “${created.name}” created`);
        await refreshInstances();
        location.hash = `#/instances/${enc(created.id)}/connection`;
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function loadUserStats(period) {
    const box = $('#user-usage');
    try {
      const { total, instances } = await api('GET', `/api/stats/user?period=${enc(period)}`);
      if (!box.isConnected) return;
      box.replaceChildren(
        usageTiles(total, [['instanceCount', 'Instances']]),
        h('h3', { text: 'Messages per instance' }),
        barChart({
          labels: instances.map((i) => i.name),
          series: [
            { name: 'Sent', cls: 'sent', values: instances.map((i) => i.messagesSent || 0) },
            { name: 'Received', cls: 'received', values: instances.map((i) => i.messagesReceived || 0) },
          ],
          empty: 'No instances yet.',
        }),
      );
    } catch (e) {
      box.replaceChildren(h('p', { class: 'error', text: e.message }));
    }
  }

  function usageTiles(u, extra = []) {
    const items = [
      ...extra,
      ['messagesSent', 'Messages sent'],
      ['messagesReceived', 'Messages received'],
      ['mediaSent', 'Media sent'],
      ['mediaReceived', 'Media received'],
      ['totalMediaSize', 'Media volume', fmtBytes],
      ['apiCalls', 'API calls'],
      ['webhookSent', 'Webhooks delivered'],
    ];
    return h(
      'div',
      { class: 'tiles' },
      ...items.map(([key, label, fmt]) =>
        h('div', { class: 'tile', 'data-key': key }, h('span', { class: 'tile-value', text: (fmt || fmtNumber)(u?.[key] || 0) }), h('span', { class: 'tile-label', text: label })),
      ),
    );
  }

  /** A grouped bar chart in SVG: one group per label, one bar per series. */
  function barChart({ labels, series, empty }) {
    const max = Math.max(0, ...series.flatMap((x) => x.values));
    if (!labels.length || max === 0) {
      return h('p', { class: 'muted chart-empty', text: labels.length ? 'Nothing counted in this period.' : empty });
    }
    const W = 900;
    const H = 240;
    const pad = { l: 44, r: 8, t: 10, b: 34 };
    const plotW = W - pad.l - pad.r;
    const plotH = H - pad.t - pad.b;
    const step = niceStep(max);
    const top = Math.ceil(max / step) * step;
    const y = (v) => pad.t + plotH - (v / top) * plotH;
    const group = plotW / labels.length;
    const barW = Math.min(28, (group * 0.7) / series.length);
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': series.map((x) => x.name).join(' and ') });
    for (let v = 0; v <= top; v += step) {
      svg.append(
        s('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: 'grid' }),
        s('text', { x: pad.l - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end', text: fmtNumber(v) }),
      );
    }
    const every = Math.ceil(labels.length / 12);
    labels.forEach((label, i) => {
      const gx = pad.l + i * group + (group - barW * series.length) / 2;
      series.forEach((ser, j) => {
        const v = ser.values[i] || 0;
        svg.append(
          s(
            'rect',
            { x: gx + j * barW, y: y(v), width: Math.max(1, barW - 2), height: Math.max(0, pad.t + plotH - y(v)), class: `bar ${ser.cls}` },
            s('title', { text: `${label} — ${ser.name}: ${fmtNumber(v)}` }),
          ),
        );
      });
      if (i % every === 0) {
        const text = label.length > 14 ? `${label.slice(0, 13)}…` : label;
        svg.append(s('text', { x: pad.l + i * group + group / 2, y: H - pad.b + 16, class: 'axis', 'text-anchor': 'middle', text }));
      }
    });
    const legend = h(
      'div',
      { class: 'legend' },
      ...series.map((ser) => h('span', {}, h('i', { class: `swatch ${ser.cls}` }), ser.name)),
    );
    return h('figure', { class: 'chart-box' }, svg, legend);
  }

  function niceStep(max) {
    const raw = max / 4;
    const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
    for (const m of [1, 2, 5, 10]) {
      if (raw <= m * mag) return Math.max(1, m * mag);
    }
    return 10 * mag;
  }

  // ---------------------------------------------------------------------------------
  // One instance: header, tabs, live events

  function openInstance(id, tab) {
    if (state.view?.id !== id) {
      closeView();
      state.view = { id, tab, instance: null, stream: null, events: [], mode: null, chat: null };
      drawInstanceShell();
      loadInstance();
      followEvents(id);
    } else {
      state.view.tab = tab;
      state.view.mode = null;
    }
    drawTabs();
    drawTab();
  }

  function drawInstanceShell() {
    const main = $('#main');
    main.replaceChildren(
      h(
        'div',
        { class: 'instance-head' },
        h('div', {}, h('h1', { id: 'instance-name', text: 'Loading…' }), h('p', { id: 'instance-sub', class: 'muted' })),
        h('span', { class: 'spacer' }),
        h('span', { id: 'live', class: 'live', title: 'Live event stream', text: 'offline' }),
        statusBadge('connecting', 'instance-status'),
      ),
      h(
        'div',
        { class: 'actions instance-actions' },
        h('button', { type: 'button', id: 'reconnect', onclick: (e) => instanceAction(e.currentTarget, 'reconnect') }, 'Reconnect'),
        h('button', { type: 'button', id: 'logout-instance', onclick: (e) => instanceAction(e.currentTarget, 'logout') }, 'Log out'),
        h('button', { type: 'button', id: 'delete-instance', class: 'danger', onclick: (e) => deleteInstance(e.currentTarget) }, 'Delete'),
      ),
      h('nav', { id: 'tabs', class: 'tabs' }),
      h('div', { id: 'tab-body', class: 'tab-body' }),
    );
  }

  function drawTabs() {
    const v = state.view;
    $('#tabs').replaceChildren(
      ...TABS.map(([t, label]) =>
        h('a', { href: `#/instances/${enc(v.id)}/${t}`, class: t === v.tab ? 'active' : '', 'data-tab': t, text: label }),
      ),
    );
  }

  async function loadInstance() {
    const v = state.view;
    try {
      const inst = await api('GET', `/api/instances/${enc(v.id)}`);
      if (state.view !== v) return;
      updateInstance(inst);
      loadOwner();
    } catch (e) {
      if (state.view !== v) return;
      if (e.status === 404) {
        $('#main').replaceChildren(
          h('h1', { text: 'Instance not found' }),
          h('p', { class: 'muted', text: 'It may have been deleted.' }),
          h('a', { href: '#/', class: 'button', text: 'Back to the overview' }),
        );
        closeView();
      } else {
        reportError(e);
      }
    }
  }

  /** Cluster mode: which node owns the open instance (its status says; absent otherwise). */
  async function loadOwner() {
    const v = state.view;
    try {
      const { node } = await api('GET', `/api/instances/${enc(v.id)}/status`);
      if (state.view === v && node && node !== v.instance?.node) updateInstance({ node });
    } catch {
      // Moving between nodes (503) or gone: the next poll asks again.
    }
  }

  /** New facts about the open instance (from the API or an event): redraw what changed. */
  function updateInstance(fresh) {
    const v = state.view;
    if (!v) return;
    const before = v.instance;
    v.instance = { ...(before || {}), ...fresh };
    const i = v.instance;
    $('#instance-name').textContent = i.name;
    $('#instance-sub').textContent = [
      `engine ${i.engine}`,
      i.phone ? `+${i.phone}` : null,
      i.node ? `on node ${i.node}` : null,
      i.lastActivity ? `last activity ${fmtTime(i.lastActivity)}` : null,
    ]
      .filter(Boolean)
      .join(' · ');
    const badge = $('#instance-status');
    badge.replaceWith(statusBadge(i.status, 'instance-status'));
    if (v.tab !== 'connection') return;
    if (connectionMode(i) !== v.mode) {
      drawTab();
    } else if (v.mode === 'pairing' && before && before.status !== i.status) {
      $('#qr-refresh').textContent = pairingUnderWay(i) ? 'Reload QR code' : 'Start pairing';
      if (pairingUnderWay(i)) loadQr();
      else $('#qr-box').replaceChildren(notPairing(i));
    }
  }

  function applyStatus(status, extra = {}) {
    const v = state.view;
    if (!v?.instance) return;
    updateInstance({ status, ...extra });
    const listed = state.instances.find((x) => x.id === v.id);
    if (listed) {
      Object.assign(listed, { status, ...extra });
      drawInstanceList();
    }
  }

  async function instanceAction(button, action) {
    const v = state.view;
    await busy(button, async () => {
      try {
        const answer = await api('POST', `/api/instances/${enc(v.id)}/${action}`);
        toast(answer?.message || 'Done');
        refreshInstances();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function deleteInstance(button) {
    const v = state.view;
    if (!confirm(`Delete the instance “${v.instance?.name || v.id}”? Its session and history are removed.`)) return;
    await busy(button, async () => {
      try {
        await api('DELETE', `/api/instances/${enc(v.id)}`);
        toast('Instance deleted');
        closeView();
        location.hash = '#/';
        refreshInstances();
      } catch (e) {
        reportError(e);
      }
    });
  }

  /** Follows the instance's event stream until the view closes, reconnecting with backoff. */
  async function followEvents(id) {
    const v = state.view;
    const ctrl = new AbortController();
    v.stream = ctrl;
    let lastId = null;
    let delay = 1000;
    await seedActivity(v);
    while (!ctrl.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch(`/api/instances/${enc(id)}/events/stream`, { headers, signal: ctrl.signal });
        if (res.status === 401) {
          signOut('Your session has ended. Sign in again.');
          return;
        }
        if (res.status === 404) return;
        if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
        setLive(true);
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
              else if (line.startsWith('id:')) lastId = line.slice(3).trim();
            }
            if (data.length) {
              const event = readJson(data.join('\n'));
              if (event && state.view === v) onEvent(event);
            }
          }
        }
      } catch {
        // Dropped or refused: try again below unless the view closed.
      }
      if (state.view === v) setLive(false);
      await sleep(delay, ctrl.signal);
      delay = Math.min(delay * 2, STREAM_RETRY_MAX_MS);
    }
  }

  /** Starts the log with the stored activity (newest first); live events go on top. */
  async function seedActivity(v) {
    try {
      const { logs } = await api('GET', `/api/instances/${enc(v.id)}/activity?limit=${EVENT_LOG_SIZE}`);
      if (state.view !== v) return;
      const past = logs.map((l) => ({ type: l.action, timestamp: l.createdAt, data: l.details || {} }));
      v.events = [...v.events, ...past].slice(0, EVENT_LOG_SIZE);
      drawEventLog();
    } catch {
      // The log stays empty; live events still show.
    }
  }

  function setLive(on) {
    const el = $('#live');
    if (!el) return;
    el.textContent = on ? 'live' : 'offline';
    el.classList.toggle('on', on);
  }

  function onEvent(event) {
    const v = state.view;
    v.events.unshift(event);
    v.events.length = Math.min(v.events.length, EVENT_LOG_SIZE);
    drawEventLog();
    const d = event.data || {};
    switch (event.type) {
      case 'qr_received': {
        // A change of status reloads the QR code by itself; a new code in the same status not.
        const same = v.instance?.status === 'qr';
        applyStatus('qr');
        if (same && v.tab === 'connection') loadQr();
        break;
      }
      case 'connected':
        applyStatus('connected', d.phone ? { phone: d.phone } : {});
        break;
      case 'disconnected':
        applyStatus(d.reason === 'logout' ? 'logged_out' : 'disconnected');
        break;
      case 'message_sent':
      case 'message_received':
      case 'message_status':
      case 'message_reaction':
      case 'message_edited':
      case 'message_revoked':
        if (v.tab === 'messages') {
          loadChats();
          const chat = d.remoteJid || d.to || d.from;
          if (v.chat && chat && chatKey(chat) === v.chat) loadHistory();
        }
        break;
      default:
        break;
    }
  }

  function drawEventLog() {
    const list = $('#event-log');
    if (!list) return;
    const events = state.view.events;
    list.replaceChildren(
      ...(events.length
        ? events.map((e) =>
            h(
              'li',
              {},
              h('time', { text: new Date(e.timestamp).toLocaleTimeString() }),
              h('span', { class: 'event-type', text: e.type }),
              h('span', { class: 'muted', text: eventSummary(e) }),
            ),
          )
        : [h('li', { class: 'muted', text: 'Nothing yet: events appear here as they happen.' })]),
    );
  }

  function eventSummary(e) {
    const d = e.data || {};
    switch (e.type) {
      case 'connected':
        return d.phone ? `as +${d.phone}` : '';
      case 'disconnected':
      case 'logged_out':
      case 'failed':
      case 'reconnecting':
        return d.reason || '';
      case 'created':
        return d.engine ? `engine ${d.engine}` : '';
      case 'updated':
        return Array.isArray(d.fields) ? d.fields.join(', ') : '';
      case 'qr_received':
        return d.attempt ? `attempt ${d.attempt}` : '';
      case 'message_sent':
        return `to ${chatLabel(d.to)}: ${d.body ?? d.type ?? ''}`;
      case 'message_received':
        return `from ${chatLabel(d.from)}: ${d.body ?? d.type ?? ''}`;
      case 'message_status':
        return `${d.messageId} → ${d.status}`;
      case 'message_reaction':
        return `${d.fromMe ? 'you' : chatLabel(d.sender)}: ${d.emoji || 'reaction taken back'}`;
      case 'message_edited':
        return `${d.messageId}: ${d.message ?? ''}`;
      case 'message_revoked':
        return `${d.messageId}${d.forEveryone === false ? ' (for you)' : ''}`;
      default:
        return '';
    }
  }

  function drawTab() {
    const v = state.view;
    const body = $('#tab-body');
    clearTimeout(v.qrTimer);
    if (v.tab === 'connection') {
      if (!v.instance) {
        v.mode = null;
        body.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }));
        return;
      }
      v.mode = connectionMode(v.instance);
      drawConnection(body);
    } else if (v.tab === 'messages') {
      drawMessages(body);
    } else if (v.tab === 'webhooks') {
      drawWebhooks(body);
    } else {
      drawUsage(body);
    }
  }

  // ---------------------------------------------------------------------------------
  // Connection tab: QR, sandbox scan, pair code, live events

  function connectionMode(i) {
    return i.status === 'connected' ? 'connected' : 'pairing';
  }

  /** Whether a QR code is shown or coming. Asking for one otherwise starts a new pairing,
   * which waits for the user to press the button. */
  function pairingUnderWay(i) {
    return i.status === 'qr' || i.status === 'connecting';
  }

  function drawConnection(body) {
    const v = state.view;
    const i = v.instance;
    const events = h(
      'section',
      { class: 'card' },
      h('h2', { text: 'Activity' }),
      h('ul', { id: 'event-log', class: 'event-log' }),
    );
    if (v.mode === 'connected') {
      body.replaceChildren(
        h(
          'section',
          { class: 'card connected-card' },
          h('h2', { text: 'Connected' }),
          h('p', { id: 'connected-as' }, 'This instance is linked as ', h('strong', { text: i.phone ? `+${i.phone}` : 'a phone' }), '.'),
          h('p', { class: 'muted', text: 'Send a message from the Messages tab, or log the instance out above.' }),
          h('a', { class: 'button primary', href: `#/instances/${enc(v.id)}/messages`, text: 'Open messages' }),
        ),
        events,
      );
      drawEventLog();
      return;
    }
    const sandbox = i.engine === 'sandbox';
    const scanPhone = h('input', { id: 'sandbox-phone', value: randomPhone(), 'aria-label': 'Phone number of the sandbox phone' });
    const pairPhone = h('input', { id: 'pair-phone', placeholder: '+7 900 123-45-67', 'aria-label': 'Phone number to pair' });
    body.replaceChildren(
      h(
        'div',
        { class: 'pair-grid' },
        h(
          'section',
          { class: 'card qr-card' },
          h('h2', { text: 'Scan the QR code' }),
          h(
            'div',
            { id: 'qr-box', class: 'qr-box' },
            pairingUnderWay(i) ? h('p', { class: 'muted', text: 'Loading the QR code…' }) : notPairing(i),
          ),
          h('p', { class: 'muted small-text', text: 'On the phone: WhatsApp → Settings → Linked devices → Link a device.' }),
          h('button', { type: 'button', id: 'qr-refresh', class: 'ghost', onclick: () => loadQr() }, pairingUnderWay(i) ? 'Reload QR code' : 'Start pairing'),
        ),
        h(
          'div',
          { class: 'stack' },
          sandbox &&
            h(
              'section',
              { class: 'card' },
              h('h2', { text: 'Sandbox phone' }),
              h('p', { class: 'muted', text: 'The sandbox engine simulates WhatsApp: “scan” the code with a simulated phone.' }),
              h('label', {}, 'Phone number', scanPhone),
              h('div', { class: 'actions' }, h('button', { type: 'button', id: 'sandbox-scan', class: 'primary', onclick: (e) => sandboxScan(e.currentTarget, scanPhone.value) }, 'Scan with sandbox phone')),
            ),
          h(
            'section',
            { class: 'card' },
            h('h2', { text: 'Pair with a code' }),
            h('p', { class: 'muted', text: 'Instead of scanning, enter a code on the phone: Linked devices → Link with phone number.' }),
            h('label', {}, 'Phone number', pairPhone),
            h('div', { class: 'actions' }, h('button', { type: 'button', id: 'pair-request', onclick: (e) => requestPairCode(e.currentTarget, pairPhone.value) }, 'Get pair code')),
            h('p', { id: 'pair-code', class: 'pair-code', hidden: true }),
          ),
        ),
      ),
      events,
    );
    drawEventLog();
    if (pairingUnderWay(i)) loadQr();
  }

  function notPairing(i) {
    return h('p', { class: 'muted', text: `The instance is ${(STATUS_LABEL[i.status] || i.status).toLowerCase()}. Start pairing to get a QR code.` });
  }

  /** Shows the instance's QR code (a PNG turned into a data: URL, which the CSP allows). */
  async function loadQr() {
    const v = state.view;
    if (!v || v.tab !== 'connection' || v.mode !== 'pairing') return;
    clearTimeout(v.qrTimer);
    const box = $('#qr-box');
    try {
      const res = await api('GET', `/api/instances/${enc(v.id)}/qr?format=png`, undefined, { raw: true });
      if (state.view !== v || !box.isConnected) return;
      if (res.status === 202) {
        box.replaceChildren(h('div', { class: 'spinner', 'aria-hidden': 'true' }), h('p', { class: 'muted', text: 'Generating a QR code…' }));
        v.qrTimer = setTimeout(loadQr, 1500);
        return;
      }
      if (res.status === 409) {
        refreshInstances();
        return;
      }
      if (!res.ok) {
        const err = readJson(await res.text());
        box.replaceChildren(h('p', { class: 'error', text: err?.error || `QR code: ${res.status}` }));
        return;
      }
      const url = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        res.blob().then((b) => reader.readAsDataURL(b), reject);
      });
      if (state.view !== v || !box.isConnected) return;
      box.replaceChildren(h('img', { id: 'qr-image', src: url, alt: 'QR code to link this instance', width: 264, height: 264 }));
    } catch (e) {
      if (box.isConnected) box.replaceChildren(h('p', { class: 'error', text: e.message }));
    }
  }

  async function sandboxScan(button, phone) {
    const v = state.view;
    await busy(button, async () => {
      try {
        const answer = await api('POST', `/api/sandbox/instances/${enc(v.id)}/scan`, { phone });
        toast(`Scanned by +${answer.phone}`);
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function requestPairCode(button, phone) {
    const v = state.view;
    await busy(button, async () => {
      try {
        const { code } = await api('POST', `/api/instances/${enc(v.id)}/pair-code`, { phone });
        const out = $('#pair-code');
        out.textContent = code;
        out.hidden = false;
      } catch (e) {
        reportError(e);
      }
    });
  }

  // ---------------------------------------------------------------------------------
  // Messages tab: chats, history, sending

  function drawMessages(body) {
    const v = state.view;
    const phone = h('input', { id: 'send-phone', name: 'phone', required: true, placeholder: '+7 900 123-45-67', value: v.chat && !v.chat.includes('@') ? `+${v.chat}` : v.chat || '' });
    const text = h('textarea', { id: 'send-text', name: 'message', required: true, rows: 2, placeholder: 'Hello from wagate!' });
    const form = h(
      'form',
      { id: 'send-form', class: 'card send-form', onsubmit: (e) => sendMessage(e, phone, text) },
      h('h2', { text: 'Send a test message' }),
      h(
        'div',
        { id: 'reply-banner', class: 'reply-banner', hidden: true },
        h('span', { class: 'muted', text: 'Replying to ' }),
        h('q', { id: 'reply-quote' }),
        h('button', { type: 'button', class: 'ghost small', id: 'reply-cancel', title: 'Do not reply', onclick: () => setReply(null) }, '✕'),
      ),
      h('div', { class: 'grid-send' }, h('label', {}, 'To', phone), h('label', {}, 'Message', text)),
      h('div', { class: 'actions' }, h('button', { id: 'send-submit', type: 'submit', class: 'primary', text: 'Send' })),
    );
    body.replaceChildren(
      form,
      h(
        'div',
        { class: 'chat-grid' },
        h('section', { class: 'card chats' }, h('h2', { text: 'Chats' }), h('ul', { id: 'chat-list', class: 'chat-list' })),
        h('section', { class: 'card history-card' }, h('div', { class: 'card-head' }, h('h2', { id: 'history-title', text: 'History' }), h('span', { id: 'history-actions', class: 'actions' })), h('ol', { id: 'history', class: 'history' })),
      ),
    );
    loadChats();
    loadHistory();
  }

  async function sendMessage(ev, phoneInput, textInput) {
    ev.preventDefault();
    const v = state.view;
    const phone = phoneInput.value.trim();
    const message = textInput.value;
    const chat = phone.includes('@') ? phone : phone.replace(/[^0-9]/g, '');
    // A reply goes only to the chat of the message it quotes.
    const replyTo = v.replyTo && v.replyTo.chat === chat ? v.replyTo.messageId : undefined;
    await busy($('#send-submit'), async () => {
      try {
        await api('POST', `/api/whatsapp/${enc(v.id)}/send`, { phone, message, replyTo });
        toast('Message sent');
        textInput.value = '';
        setReply(null);
        v.chat = chat;
        loadChats();
        loadHistory();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function loadChats() {
    const v = state.view;
    const list = $('#chat-list');
    if (!list) return;
    try {
      const { chats } = await api('GET', `/api/instances/${enc(v.id)}/chats?limit=100`);
      if (state.view !== v || !list.isConnected) return;
      list.replaceChildren(
        ...(chats.length
          ? chats.map((c) => {
              const last = c.lastMessage || {};
              const key = chatKey(c.chatId);
              return h(
                'li',
                { class: key === v.chat ? 'selected' : '' },
                h(
                  'button',
                  { type: 'button', class: 'chat-item', 'data-chat': key, onclick: () => selectChat(key) },
                  h('span', { class: 'chat-name', text: last.pushName && !last.fromMe ? `${last.pushName} (${chatLabel(c.chatId)})` : chatLabel(c.chatId) }),
                  c.unreadCount ? h('span', { class: 'unread', text: c.unreadCount }) : null,
                  h('span', { class: 'chat-last muted', text: `${last.fromMe ? 'You: ' : ''}${messageText(last)}` }),
                ),
              );
            })
          : [h('li', { class: 'muted', text: 'No chats yet.' })]),
      );
    } catch (e) {
      if (list.isConnected) list.replaceChildren(h('li', { class: 'error', text: e.message }));
    }
  }

  function selectChat(key) {
    const v = state.view;
    v.chat = key;
    if (v.replyTo && v.replyTo.chat !== key) setReply(null);
    const phone = $('#send-phone');
    if (phone) phone.value = key.includes('@') ? key : `+${key}`;
    for (const li of document.querySelectorAll('#chat-list li')) {
      li.classList.toggle('selected', li.querySelector('.chat-item')?.dataset.chat === key);
    }
    loadHistory();
  }

  async function loadHistory() {
    const v = state.view;
    const list = $('#history');
    if (!list) return;
    const actions = $('#history-actions');
    if (!v.chat) {
      $('#history-title').textContent = 'History';
      actions.replaceChildren();
      list.replaceChildren(h('li', { class: 'muted', text: 'Pick a chat, or send a message to start one.' }));
      return;
    }
    const chat = v.chat;
    $('#history-title').textContent = `History with ${chat.includes('@') ? chat : `+${chat}`}`;
    actions.replaceChildren(
      h('button', { type: 'button', class: 'small', id: 'mark-read', onclick: (e) => markRead(e.currentTarget, chat) }, 'Mark read'),
      v.instance?.engine === 'sandbox' && !chat.includes('@')
        ? h('button', { type: 'button', class: 'small', id: 'simulate-reply', onclick: (e) => simulateReply(e.currentTarget, chat) }, 'Simulate a reply')
        : null,
    );
    try {
      const { messages } = await api('GET', `/api/instances/${enc(v.id)}/chats/${enc(chat)}/messages?limit=100`);
      if (state.view !== v || v.chat !== chat || !list.isConnected) return;
      const byId = new Map(messages.map((m) => [m.messageId, m]));
      list.replaceChildren(
        ...(messages.length
          ? messages
              .slice()
              .reverse()
              .map((m) => bubble(m, byId, chat))
          : [h('li', { class: 'muted', text: 'No messages in this chat.' })]),
      );
      list.scrollTop = list.scrollHeight;
    } catch (e) {
      if (list.isConnected) list.replaceChildren(h('li', { class: 'error', text: e.message }));
    }
  }

  /** What a message says, in one line: its text, or what it carries. */
  function messageText(m) {
    if (m.revoked) return 'This message was deleted';
    if (m.location) return `📍 ${[m.location.name, m.location.address].filter(Boolean).join(', ') || `${m.location.latitude}, ${m.location.longitude}`}`;
    if (m.contacts?.length) return `👤 ${m.contacts.map((c) => c.name).join(', ')}`;
    if (m.poll) return `📊 ${m.poll.question}`;
    return m.content ?? m.caption ?? (m.fileName ? `[${m.messageType}: ${m.fileName}]` : `[${m.messageType}]`);
  }

  /** One message of the history: the message it replies to, its text, its reactions and actions. */
  function bubble(m, byId, chat) {
    const quoted = m.quotedMessageId ? byId.get(m.quotedMessageId) : null;
    const reactions = new Map();
    for (const r of m.reactions || []) {
      const who = r.fromMe ? 'you' : chatLabel(r.sender);
      reactions.set(r.emoji, [...(reactions.get(r.emoji) || []), who]);
    }
    const mine = (m.reactions || []).find((r) => r.fromMe)?.emoji;
    const meta = [fmtTime(m.timestamp), m.editedAt && !m.revoked ? 'edited' : null, m.fromMe ? m.status : null];
    return h(
      'li',
      { class: `bubble ${m.fromMe ? 'out' : 'in'}${m.revoked ? ' revoked' : ''}`, 'data-message-id': m.messageId },
      m.quotedMessageId
        ? h('blockquote', { class: 'bubble-quote', 'data-quoted': m.quotedMessageId, text: quoted ? messageText(quoted) : 'A message not shown here' })
        : null,
      h('span', { class: 'bubble-text', text: messageText(m) }),
      reactions.size
        ? h(
            'span',
            { class: 'reactions' },
            [...reactions].map(([emoji, who]) =>
              h('span', { class: 'reaction', 'data-emoji': emoji, title: who.join(', '), text: who.length > 1 ? `${emoji} ${who.length}` : emoji }),
            ),
          )
        : null,
      h(
        'span',
        { class: 'bubble-foot' },
        m.revoked
          ? null
          : h(
              'span',
              { class: 'bubble-actions' },
              h('button', { type: 'button', class: 'ghost tiny bubble-reply', title: 'Reply to this message', onclick: () => setReply({ chat, messageId: m.messageId, text: messageText(m) }) }, 'Reply'),
              h('button', { type: 'button', class: 'ghost tiny bubble-react', title: 'React to this message', onclick: (e) => togglePicker(e.currentTarget, m.messageId, mine) }, 'React'),
            ),
        h('span', { class: 'bubble-meta', text: meta.filter(Boolean).join(' · ') }),
      ),
      state.view.picker === m.messageId && !m.revoked ? reactionPicker(m.messageId, mine) : null,
    );
  }

  /** Sets (or with null, clears) the message the next send replies to. */
  function setReply(reply) {
    const v = state.view;
    v.replyTo = reply;
    const banner = $('#reply-banner');
    if (!banner) return;
    banner.hidden = !reply;
    $('#reply-quote').textContent = reply ? reply.text : '';
    if (reply) {
      const phone = $('#send-phone');
      if (phone) phone.value = reply.chat.includes('@') ? reply.chat : `+${reply.chat}`;
      $('#send-text')?.focus();
    }
  }

  const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

  /** Opens (or closes) the emoji choice under a message; it stays open across redraws. */
  function togglePicker(button, messageId, mine) {
    const v = state.view;
    const li = button.closest('.bubble');
    li.querySelector('.reaction-picker')?.remove();
    v.picker = v.picker === messageId ? null : messageId;
    if (v.picker) li.append(reactionPicker(messageId, mine));
  }

  /** The emojis to react with; the chosen one is sent at once, the one already sent takes it back. */
  function reactionPicker(messageId, mine) {
    return h(
      'span',
      { class: 'reaction-picker', role: 'group', 'aria-label': 'Reactions' },
      REACTIONS.map((emoji) =>
        h(
          'button',
          {
            type: 'button',
            class: `ghost tiny${emoji === mine ? ' chosen' : ''}`,
            'data-emoji': emoji,
            title: emoji === mine ? 'Take your reaction back' : `React with ${emoji}`,
            onclick: (e) => react(e.currentTarget, messageId, emoji === mine ? '' : emoji),
          },
          emoji,
        ),
      ),
    );
  }

  async function react(button, messageId, emoji) {
    const v = state.view;
    await busy(button, async () => {
      try {
        await api('POST', `/api/whatsapp/${enc(v.id)}/messages/${enc(messageId)}/reaction`, { emoji });
        v.picker = null;
        loadHistory();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function markRead(button, chat) {
    const v = state.view;
    await busy(button, async () => {
      try {
        const { marked } = await api('POST', `/api/instances/${enc(v.id)}/chats/${enc(chat)}/read`);
        toast(`${marked} message(s) marked read`);
        loadChats();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function simulateReply(button, chat) {
    const v = state.view;
    await busy(button, async () => {
      try {
        await api('POST', `/api/sandbox/instances/${enc(v.id)}/inbound`, {
          from: chat,
          body: 'Thanks, got it! (a simulated reply)',
        });
      } catch (e) {
        reportError(e);
      }
    });
  }

  // ---------------------------------------------------------------------------------
  // Webhooks tab: settings, test, backlog (pending, failed, replay, pause), deliveries

  function drawWebhooks(body) {
    const v = state.view;
    const i = v.instance || {};
    const url = h('input', { id: 'webhook-url', type: 'url', value: i.webhookUrl || '', placeholder: 'https://example.com/hook' });
    const enabled = h('input', { id: 'webhook-enabled', type: 'checkbox', checked: i.webhookEnabled });
    body.replaceChildren(
      h(
        'form',
        { class: 'card', id: 'webhook-form', onsubmit: (e) => saveWebhook(e, url, enabled) },
        h('h2', { text: 'Webhook' }),
        h('label', {}, 'URL', url),
        h('label', { class: 'check' }, enabled, ' Deliver events to this URL'),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'submit', class: 'primary', id: 'webhook-save', text: 'Save' }),
          h('button', { type: 'button', id: 'webhook-test', onclick: (e) => testWebhook(e.currentTarget) }, 'Send test webhook'),
        ),
      ),
      h(
        'section',
        { class: 'card', id: 'webhook-backlog' },
        h(
          'div',
          { class: 'card-head' },
          h('h2', { text: 'Backlog' }),
          h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', class: 'small', id: 'webhook-replay', onclick: (e) => replayFailed(e.currentTarget) }, 'Replay failed'),
            h('button', { type: 'button', class: 'small', id: 'webhook-pause', onclick: (e) => togglePause(e.currentTarget) }, 'Pause'),
          ),
        ),
        h(
          'div',
          { class: 'tiles' },
          ...[
            ['pending', 'Waiting'],
            ['failed', 'Failed'],
            ['state', 'Delivery'],
          ].map(([key, label]) => h('div', { class: 'tile', 'data-key': key }, h('span', { class: 'tile-value', text: '—' }), h('span', { class: 'tile-label', text: label }))),
        ),
      ),
      h(
        'section',
        { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', { text: 'Deliveries' }), h('button', { type: 'button', class: 'small', onclick: () => loadDeliveries() }, 'Refresh')),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table' }, h('thead', {}, h('tr', {}, ...['Time', 'Event', 'Attempt', 'Status', 'HTTP', 'Duration', 'Error'].map((t) => h('th', { text: t })))), h('tbody', { id: 'deliveries' }))),
      ),
    );
    loadDeliveries();
  }

  async function saveWebhook(ev, url, enabled) {
    ev.preventDefault();
    const v = state.view;
    await busy($('#webhook-save'), async () => {
      try {
        const answer = await api('PUT', `/api/instances/${enc(v.id)}`, { webhookUrl: url.value.trim(), webhookEnabled: enabled.checked });
        updateInstance({ webhookUrl: answer.webhookUrl, webhookEnabled: answer.webhookEnabled });
        enabled.checked = answer.webhookEnabled;
        toast('Webhook saved');
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function testWebhook(button) {
    const v = state.view;
    await busy(button, async () => {
      try {
        await api('POST', `/api/instances/${enc(v.id)}/webhook/test`);
        toast('Test webhook queued');
        loadDeliveries();
      } catch (e) {
        reportError(e);
      }
    });
  }

  /** Re-queues every failed delivery of the instance, in order. */
  async function replayFailed(button) {
    const v = state.view;
    await busy(button, async () => {
      try {
        const { queued } = await api('POST', `/api/instances/${enc(v.id)}/webhook/replay`, { status: 'failed' });
        toast(`${queued} failed ${queued === 1 ? 'delivery' : 'deliveries'} queued again`);
        loadDeliveries();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function togglePause(button) {
    const v = state.view;
    const action = button.dataset.paused === 'true' ? 'resume' : 'pause';
    await busy(button, async () => {
      try {
        const { paused } = await api('POST', `/api/instances/${enc(v.id)}/webhook/${action}`);
        toast(paused ? 'Delivery paused' : 'Delivery resumed');
        loadDeliveries();
      } catch (e) {
        reportError(e);
      }
    });
  }

  async function loadBacklog() {
    const v = state.view;
    const card = $('#webhook-backlog');
    if (!v || !card) return;
    const s = await api('GET', `/api/instances/${enc(v.id)}/webhook/status`);
    if (state.view !== v || !card.isConnected) return;
    const set = (key, text) => {
      card.querySelector(`.tile[data-key=${key}] .tile-value`).textContent = text;
    };
    set('pending', fmtNumber(s.pending));
    set('failed', fmtNumber(s.failed));
    set('state', s.paused ? 'paused' : 'running');
    const pause = $('#webhook-pause');
    pause.dataset.paused = String(s.paused);
    pause.textContent = s.paused ? 'Resume' : 'Pause';
    $('#webhook-replay').disabled = s.failed === 0;
  }

  async function loadDeliveries() {
    const v = state.view;
    const tbody = $('#deliveries');
    if (!v || !tbody) return;
    loadBacklog().catch(reportError);
    try {
      const { deliveries } = await api('GET', `/api/instances/${enc(v.id)}/webhook/deliveries?limit=50`);
      if (state.view !== v || !tbody.isConnected) return;
      tbody.replaceChildren(
        ...(deliveries.length
          ? deliveries.map((d) =>
              h(
                'tr',
                {},
                h('td', { text: fmtTime(d.createdAt) }),
                h('td', { text: d.event }),
                h('td', { text: d.attempt }),
                h('td', {}, h('span', { class: `badge delivery-${d.status}`, text: d.status })),
                h('td', { text: d.httpStatus ?? '—' }),
                h('td', { text: `${d.durationMs} ms` }),
                h('td', { class: 'muted', text: d.error || '' }),
              ),
            )
          : [h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'No deliveries yet.' }))]),
      );
    } catch (e) {
      if (tbody.isConnected) tbody.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'error', text: e.message })));
    }
  }

  // ---------------------------------------------------------------------------------
  // Usage tab: this instance's statistics

  function drawUsage(body) {
    const period = h(
      'select',
      { id: 'instance-usage-period', onchange: () => loadInstanceStats(period.value) },
      ...['today', 'week', 'month', 'all'].map((p) => h('option', { value: p, text: p, selected: p === 'week' })),
    );
    body.replaceChildren(
      h(
        'section',
        { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', { text: 'Usage' }), h('label', { class: 'inline' }, 'Period ', period)),
        h('div', { id: 'instance-usage' }, h('p', { class: 'muted', text: 'Loading…' })),
      ),
    );
    loadInstanceStats('week');
  }

  async function loadInstanceStats(period) {
    const v = state.view;
    const box = $('#instance-usage');
    try {
      const { usage } = await api('GET', `/api/stats/instances/${enc(v.id)}?period=${enc(period)}`);
      if (state.view !== v || !box.isConnected) return;
      const days = everyDay(usage.dailyStats || [], period);
      box.replaceChildren(
        usageTiles(usage),
        h('h3', { text: 'Messages per day (UTC)' }),
        barChart({
          labels: days.map((d) => d.date.slice(5, 10)),
          series: [
            { name: 'Sent', cls: 'sent', values: days.map((d) => d.messagesSent || 0) },
            { name: 'Received', cls: 'received', values: days.map((d) => d.messagesReceived || 0) },
          ],
          empty: 'Nothing counted in this period.',
        }),
      );
    } catch (e) {
      if (box.isConnected) box.replaceChildren(h('p', { class: 'error', text: e.message }));
    }
  }

  /** The days of `period` up to today (UTC), with zeros for days nothing was counted. */
  function everyDay(daily, period) {
    const byDate = new Map(daily.map((d) => [d.date.slice(0, 10), d]));
    const today = new Date();
    const span = { today: 1, week: 7, month: 30 }[period];
    let first;
    if (span) {
      first = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - (span - 1));
    } else if (daily.length) {
      first = Date.parse(`${daily[0].date.slice(0, 10)}T00:00:00Z`);
    } else {
      return [];
    }
    const days = [];
    for (let t = first; t <= today.getTime() && days.length < 400; t += 86400000) {
      const date = new Date(t).toISOString().slice(0, 10);
      days.push(byDate.get(date) || { date, messagesSent: 0, messagesReceived: 0 });
    }
    return days;
  }

  // ---------------------------------------------------------------------------------
  // Start

  document.addEventListener('DOMContentLoaded', () => {
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', () => signOut());
    window.addEventListener('hashchange', route);
    if (state.token) {
      // Check the stored token before showing anything that needs it.
      api('GET', '/api/auth/me')
        .then((me) => {
          state.user = me;
          sessionStorage.setItem(USER_KEY, JSON.stringify(me));
          startApp();
        })
        .catch((e) => {
          if (e.code !== 'unauthorized') showLogin(e.message);
        });
    } else {
      showLogin();
    }
  });
})();
