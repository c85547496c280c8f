// The wagate operator desk: a chat panel over the WABA operator API, with no dependencies
// and no build step. It signs in with POST /api/auth/login and keeps the JWT in this tab's
// sessionStorage (the same keys as the dashboard). The chat list, the open conversation and
// their ticks follow the operator stream (/api/waba/operator/events, read with fetch since
// EventSource cannot send an Authorization header), resumed with Last-Event-ID.
//
// Text from the server goes into the page as text nodes (never as HTML) and nothing runs
// inline, so the page works under the server's strict Content-Security-Policy. Files are
// fetched with the token and shown from data: URLs, which that policy allows for images.
'use strict';

(() => {
  const TOKEN_KEY = 'wagate.token';
  const USER_KEY = 'wagate.user';
  /** Chats listed, and messages of a conversation loaded. */
  const CHAT_LIMIT = 200;
  const HISTORY_LIMIT = 200;
  /** How often the time left in the 24-hour windows is redrawn. */
  const CLOCK_MS = 30000;
  /** Events close together redraw the chat list once. */
  const RELOAD_DEBOUNCE_MS = 150;
  /** Longest wait before the event stream is opened again after it dropped. */
  const STREAM_RETRY_MAX_MS = 15000;
  const TICKS = { pending: '○', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };
  const TICK_TITLES = {
    pending: 'Sending',
    sent: 'Sent',
    delivered: 'Delivered',
    read: 'Read',
    failed: 'Not delivered',
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: readJson(sessionStorage.getItem(USER_KEY)),
    chats: [],
    filter: 'all',
    /** The open chat (as the list last showed it) and its messages by id. */
    chat: null,
    messages: new Map(),
    /** data: URLs of images already fetched, by message id. */
    images: new Map(),
    /** The approved templates last read, by account owner id. */
    templates: new Map(),
    /** The file to send with the next message. */
    attachment: null,
    /** The conversation follows its newest message (unless scrolled up). */
    stick: true,
    /** The template picker was opened by hand while the window is open. */
    pickerOpen: false,
    stream: null,
    reloadTimer: null,
    clockTimer: null,
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
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  let toastTimer = null;
  function toast(message, kind = 'ok') {
    const el = $('#toast');
    el.textContent = message;
    el.className = `toast ${kind}`;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, 5000);
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

  async function busy(button, work) {
    button.disabled = true;
    try {
      return await work();
    } finally {
      button.disabled = false;
      drawComposer();
    }
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    const today = new Date().toDateString() === d.toDateString();
    return today
      ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  }

  /** The 24-hour window: whether it is open, and what to say about it. */
  function windowOf(chat) {
    const ends = chat?.windowExpiresAt ? Date.parse(chat.windowExpiresAt) : NaN;
    if (Number.isNaN(ends)) return { open: false, label: 'window closed (the customer never wrote)' };
    const left = ends - Date.now();
    if (left <= 0) return { open: false, label: 'window closed' };
    const hours = Math.floor(left / 3600000);
    const minutes = Math.floor((left % 3600000) / 60000);
    return { open: true, label: hours ? `${hours}h ${minutes}m left` : `${minutes}m left` };
  }

  function assigneeLabel(id) {
    if (!id) return 'unassigned';
    if (id === state.user?.id) return 'assigned to you';
    return 'assigned to someone else';
  }

  function chatName(chat) {
    return chat.customerName || `+${chat.customerPhone}`;
  }

  function preview(m) {
    if (!m) return '';
    const text = m.content || (m.type === 'text' ? '' : `[${m.type}]`);
    return m.fromMe ? `You: ${text}` : text;
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

  /** A request with the session's token: JSON (or a FormData) in, JSON out. A 401 signs out. */
  async function api(method, path, body, { raw = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const init = { method, headers };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
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
    if (raw && res.ok) return res;
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
    const email = $('#login-email').value.trim();
    const password = $('#login-password').value;
    const button = $('#login-submit');
    button.disabled = true;
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
    } finally {
      button.disabled = false;
    }
  }

  function signOut(message) {
    state.stream?.abort();
    state.stream = null;
    clearInterval(state.clockTimer);
    state.token = null;
    state.user = null;
    state.chat = null;
    state.chats = [];
    state.messages = new Map();
    state.images = new Map();
    state.templates = new Map();
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    history.replaceState(null, '', location.pathname);
    showLogin(message);
  }

  function startApp() {
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    $('#who').textContent = `${state.user.email} (${state.user.role})`;
    clearInterval(state.clockTimer);
    state.clockTimer = setInterval(() => {
      drawChats();
      drawHead();
      drawComposer();
    }, CLOCK_MS);
    loadChats().then(route);
    followEvents();
  }

  // ---------------------------------------------------------------------------------
  // The chat list

  async function loadChats() {
    try {
      const page = await api('GET', `/api/waba/operator/chats?limit=${CHAT_LIMIT}&assigned=${enc(state.filter)}`);
      state.chats = page.chats;
      const open = state.chat && state.chats.find((c) => c.id === state.chat.id);
      if (open) state.chat = open;
      drawChats();
      drawHead();
      drawComposer();
    } catch (e) {
      reportError(e);
    }
  }

  function scheduleReload() {
    clearTimeout(state.reloadTimer);
    state.reloadTimer = setTimeout(loadChats, RELOAD_DEBOUNCE_MS);
  }

  function drawChats() {
    const list = $('#chat-list');
    list.replaceChildren(
      ...state.chats.map((c) => {
        const w = windowOf(c);
        return h(
          'li',
          { 'data-chat': c.id, class: state.chat?.id === c.id ? 'active' : null },
          h(
            'a',
            { href: `#/chats/${c.id}` },
            h('span', { class: 'chat-name', text: chatName(c) }),
            h('span', { class: 'unread', text: c.unreadCount, hidden: !c.unreadCount }),
            h('span', { class: 'chat-preview', text: preview(c.lastMessage) }),
            h(
              'span',
              { class: 'chat-meta' },
              h('span', { class: `window ${w.open ? 'open' : 'closed'}`, text: w.label }),
              h('span', { class: 'assignee', text: assigneeLabel(c.assignedOperatorId) }),
            ),
          ),
        );
      }),
    );
    $('#chat-list-empty').hidden = state.chats.length > 0;
  }

  // ---------------------------------------------------------------------------------
  // The conversation

  function route() {
    const m = /^#\/chats\/(\d+)$/.exec(location.hash);
    if (!m) {
      state.chat = null;
      $('#conversation').hidden = true;
      $('#no-chat').hidden = false;
      drawChats();
      return;
    }
    openChat(Number(m[1]));
  }

  async function openChat(id) {
    const known = state.chats.find((c) => c.id === id);
    state.chat = known || { id, customerPhone: '', windowExpiresAt: null };
    state.messages = new Map();
    state.attachment = null;
    state.pickerOpen = false;
    state.stick = true;
    $('#compose-file').value = '';
    $('#compose-text').value = '';
    $('#no-chat').hidden = true;
    $('#conversation').hidden = false;
    // Shown again (and its templates loaded for this chat's account) by drawComposer.
    $('#template-picker').hidden = true;
    drawChats();
    drawHead();
    drawMessages();
    drawComposer();
    await loadHistory();
  }

  async function loadHistory() {
    const chat = state.chat;
    if (!chat) return;
    try {
      const page = await api('GET', `/api/waba/operator/chat/${chat.id}/messages?limit=${HISTORY_LIMIT}`);
      if (state.chat?.id !== chat.id) return;
      for (const m of page.messages) state.messages.set(m.id, m);
      drawMessages();
    } catch (e) {
      reportError(e);
    }
  }

  function drawHead() {
    const chat = state.chat;
    if (!chat) return;
    $('#chat-title').textContent = chat.customerPhone ? chatName(chat) : '…';
    $('#chat-phone').textContent = chat.customerPhone ? `+${chat.customerPhone}` : '';
    const w = windowOf(chat);
    const win = $('#chat-window');
    win.textContent = w.label;
    win.dataset.open = w.open;
    $('#chat-assignee').textContent = assigneeLabel(chat.assignedOperatorId);
    const mine = chat.assignedOperatorId === state.user?.id;
    const manager = state.user?.role !== 'operator';
    $('#take').hidden = mine;
    $('#release').hidden = !chat.assignedOperatorId || !(mine || manager);
  }

  /** Ticks of an outbound message, by its status. */
  function tick(m) {
    return h('span', {
      class: 'tick',
      'data-status': m.status,
      title: TICK_TITLES[m.status] || m.status,
      text: TICKS[m.status] || m.status,
    });
  }

  function isImage(m) {
    const type = m.media?.mimeType || '';
    return m.type === 'image' || m.type === 'sticker' || type.startsWith('image/');
  }

  /** The file of a message: an image inline, anything else as a download. */
  function mediaPart(m) {
    if (!m.mediaUrl) return null;
    if (!m.media) {
      // Sent by URL: the file is elsewhere (the page may not load other origins).
      return h('a', { class: 'msg-file', href: m.mediaUrl, target: '_blank', rel: 'noopener noreferrer', text: `⬇ ${m.type}` });
    }
    if (m.media.status === 'pending') return h('p', { class: 'muted small-text', text: 'Fetching the file from Meta…' });
    if (m.media.status === 'failed') {
      return h(
        'p',
        { class: 'msg-error' },
        `The file could not be fetched: ${m.media.error || 'unknown error'} `,
        h('button', { type: 'button', class: 'link small-text', text: 'Try again', onclick: () => retryMedia(m.id) }),
      );
    }
    if (isImage(m)) {
      const img = h('img', { class: 'msg-image', alt: m.media.fileName || 'image', onload: keepBottom });
      const cached = state.images.get(m.id);
      if (cached) img.src = cached;
      else loadImage(m.id, img);
      return img;
    }
    const name = m.media.fileName || `${m.type}-${m.id}`;
    return h('a', {
      class: 'msg-file',
      href: m.mediaUrl,
      download: name,
      text: `⬇ ${name}`,
      onclick: (ev) => {
        ev.preventDefault();
        download(m.id, name);
      },
    });
  }

  async function fetchFile(id) {
    const res = await api('GET', `/api/waba/operator/media/${id}`, undefined, { raw: true });
    return res.blob();
  }

  async function loadImage(id, img) {
    try {
      const blob = await fetchFile(id);
      const url = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      });
      state.images.set(id, url);
      img.src = url;
    } catch (e) {
      img.alt = `The image could not be loaded: ${e.message}`;
    }
  }

  async function download(id, name) {
    try {
      const blob = await fetchFile(id);
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      reportError(e);
    }
  }

  async function retryMedia(id) {
    try {
      await api('POST', `/api/waba/operator/media/${id}/retry`);
    } catch (e) {
      reportError(e);
    }
  }

  /** Meta's error title, with its code unless the title already says it. */
  function errorText(error) {
    const code = error.code ? String(error.code) : '';
    return code && !error.title.includes(code) ? `${error.title} (${code})` : error.title;
  }

  function drawMessage(m) {
    const foot = h('span', { class: 'msg-foot' }, h('time', { datetime: m.timestamp, text: fmtTime(m.timestamp) }), m.fromMe ? tick(m) : null);
    // A document's content is its file name, already on the download link.
    const text = m.content && m.content !== m.media?.fileName ? m.content : null;
    return h(
      'li',
      { class: `msg ${m.fromMe ? 'out' : 'in'}`, 'data-id': m.id, 'data-status': m.status },
      mediaPart(m),
      text ? h('div', { class: 'msg-text', text }) : null,
      m.error ? h('div', { class: 'msg-error', text: `Not delivered: ${errorText(m.error)}` }) : null,
      foot,
    );
  }

  function drawMessages() {
    const list = $('#messages');
    const sorted = [...state.messages.values()].sort(
      (a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp) || a.id - b.id,
    );
    list.replaceChildren(...sorted.map(drawMessage));
    if (state.stick) list.scrollTop = list.scrollHeight;
  }

  /** Keeps the newest message in view while images above it load. */
  function keepBottom() {
    const list = $('#messages');
    if (state.stick) list.scrollTop = list.scrollHeight;
  }

  // ---------------------------------------------------------------------------------
  // Sending

  /** The message box is usable only inside the 24-hour window; templates always are. */
  function drawComposer() {
    const chat = state.chat;
    if (!chat) return;
    const w = windowOf(chat);
    const text = $('#compose-text');
    const note = $('#window-note');
    text.disabled = !w.open;
    $('#compose-file').disabled = !w.open;
    $('.attach').classList.toggle('disabled', !w.open);
    $('#compose-send').disabled = !w.open;
    text.placeholder = w.open
      ? 'Type a message'
      : 'Free-form messages are closed for this chat: the 24-hour window is over. Send a template below.';
    note.hidden = w.open;
    note.textContent = chat.windowExpiresAt
      ? "The customer's last message is more than 24 hours old: WhatsApp allows only an approved template until they write again."
      : 'The customer has not written yet: WhatsApp allows only an approved template to start the conversation.';
    $('#show-templates').hidden = !w.open || state.pickerOpen;
    $('#hide-templates').hidden = !w.open;
    const picker = $('#template-picker');
    const show = !w.open || state.pickerOpen;
    const wasHidden = picker.hidden;
    picker.hidden = !show;
    if (show && wasHidden) loadTemplates();
    const a = $('#compose-attachment');
    a.hidden = !state.attachment;
    a.replaceChildren(
      ...(state.attachment
        ? [
            `Attached: ${state.attachment.name} `,
            h('button', {
              type: 'button',
              class: 'link small-text',
              id: 'compose-detach',
              text: 'remove',
              onclick: () => {
                state.attachment = null;
                $('#compose-file').value = '';
                drawComposer();
              },
            }),
          ]
        : []),
    );
  }

  async function send(ev) {
    ev.preventDefault();
    const chat = state.chat;
    if (!chat) return;
    const text = $('#compose-text').value.trim();
    const file = state.attachment;
    if (!text && !file) return;
    await busy($('#compose-send'), async () => {
      try {
        if (file) {
          const form = new FormData();
          form.append('chatId', String(chat.id));
          if (text) form.append('message', text);
          form.append('file', file, file.name);
          await api('POST', '/api/waba/operator/send', form);
        } else {
          await api('POST', '/api/waba/operator/send', { chatId: chat.id, message: text });
        }
        $('#compose-text').value = '';
        state.attachment = null;
        state.stick = true;
        $('#compose-file').value = '';
      } catch (e) {
        reportError(e);
        if (e.code === 'outside_24h_window') scheduleReload();
      }
    });
    await loadHistory();
  }

  // ---------------------------------------------------------------------------------
  // Templates

  async function loadTemplates() {
    const chat = state.chat;
    if (!chat) return;
    const owner = chat.ownerId || '';
    // Read each time the picker opens: the server keeps Meta's list for a few minutes.
    let list;
    try {
      const query = owner && state.user?.role === 'admin' ? `?ownerId=${enc(owner)}` : '';
      list = (await api('GET', `/api/waba/operator/templates${query}`)).templates;
    } catch (e) {
      reportError(e);
      list = [];
    }
    state.templates.set(owner, list);
    if (state.chat !== chat) return;
    const select = $('#template-select');
    select.replaceChildren(
      ...list.map((t, i) => h('option', { value: i, text: `${t.name} (${t.language})` })),
    );
    select.disabled = list.length === 0;
    $('#template-send').disabled = list.length === 0;
    $('#template-empty').hidden = list.length > 0;
    drawTemplateParams();
  }

  function currentTemplate() {
    const list = state.templates.get(state.chat?.ownerId || '') || [];
    return list[Number($('#template-select').value)];
  }

  /** One input per parameter a send of the chosen template must carry. */
  function drawTemplateParams() {
    const t = currentTemplate();
    const box = $('#template-params');
    const body = t?.components.find((c) => c.type === 'BODY');
    $('#template-preview').textContent = body?.text || '';
    if (!t) {
      box.replaceChildren();
      return;
    }
    const inputs = [];
    for (const [ci, c] of t.components.entries()) {
      if (c.type === 'HEADER' && c.format && c.format !== 'TEXT') {
        const kind = c.format.toLowerCase();
        inputs.push(
          h(
            'label',
            { class: 'param' },
            kind === 'location' ? 'Header location (latitude,longitude)' : `Header ${kind} URL`,
            h('input', { 'data-component': ci, 'data-kind': kind, type: kind === 'location' ? 'text' : 'url', required: true }),
          ),
        );
        continue;
      }
      for (const p of c.parameters || []) {
        inputs.push(
          h('label', { class: 'param' }, `${c.type === 'BODY' ? 'Body' : 'Header'} {{${p}}}`, h('input', { 'data-component': ci, 'data-name': p, required: true })),
        );
      }
      for (const b of c.buttons || []) {
        for (const p of b.parameters) {
          inputs.push(
            h('label', { class: 'param' }, `Button “${b.text || b.type}” {{${p}}}`, h('input', { 'data-component': ci, 'data-button': b.index, 'data-name': p, required: true })),
          );
        }
      }
    }
    box.replaceChildren(...inputs);
  }

  /** The send's `components`, from the inputs. */
  function templateComponents(t) {
    const named = t.parameterFormat === 'NAMED';
    const text = (input) => {
      const p = { type: 'text', text: input.value.trim() };
      if (named) p.parameter_name = input.dataset.name;
      return p;
    };
    const components = [];
    const inputs = [...document.querySelectorAll('#template-params input')];
    for (const [ci, c] of t.components.entries()) {
      const mine = inputs.filter((i) => Number(i.dataset.component) === ci);
      if (!mine.length) continue;
      if (c.type === 'HEADER' && mine[0].dataset.kind) {
        const kind = mine[0].dataset.kind;
        const value = mine[0].value.trim();
        let parameter;
        if (kind === 'location') {
          const [latitude, longitude] = value.split(',').map((v) => v.trim());
          parameter = { type: 'location', location: { latitude, longitude } };
        } else {
          parameter = { type: kind, [kind]: { link: value } };
        }
        components.push({ type: 'header', parameters: [parameter] });
      } else if (c.type === 'BUTTONS') {
        for (const b of c.buttons || []) {
          const own = mine.filter((i) => Number(i.dataset.button) === b.index);
          if (own.length) {
            components.push({ type: 'button', sub_type: b.type.toLowerCase(), index: String(b.index), parameters: own.map(text) });
          }
        }
      } else {
        components.push({ type: c.type.toLowerCase(), parameters: mine.map(text) });
      }
    }
    return components;
  }

  async function sendTemplate(ev) {
    ev.preventDefault();
    const chat = state.chat;
    const t = currentTemplate();
    if (!chat || !t) return;
    const missing = [...document.querySelectorAll('#template-params input')].find((i) => !i.value.trim());
    if (missing) {
      toast('Fill in every parameter of the template.', 'error');
      missing.focus();
      return;
    }
    const template = { name: t.name, language: t.language };
    const components = templateComponents(t);
    if (components.length) template.components = components;
    const button = $('#template-send');
    button.disabled = true;
    try {
      await api('POST', '/api/waba/operator/send', { chatId: chat.id, type: 'template', template });
      for (const input of document.querySelectorAll('#template-params input')) input.value = '';
      toast(`Template ${t.name} sent`);
    } catch (e) {
      reportError(e);
    } finally {
      button.disabled = false;
    }
    await loadHistory();
  }

  // ---------------------------------------------------------------------------------
  // Assignment and reading

  async function assign(operatorId) {
    const chat = state.chat;
    if (!chat) return;
    try {
      const answer = await api('POST', `/api/waba/operator/chat/${chat.id}/assign`, { operatorId });
      state.chat = { ...state.chat, assignedOperatorId: answer.assignedOperatorId };
      drawHead();
      scheduleReload();
    } catch (e) {
      reportError(e);
    }
  }

  async function markRead() {
    const chat = state.chat;
    if (!chat) return;
    try {
      const answer = await api('POST', `/api/waba/operator/chat/${chat.id}/read`);
      if (answer.metaReadReceipt?.status === 'failed') {
        toast(`Marked read here; Meta was not told: ${answer.metaReadReceipt.error}`, 'error');
      }
      scheduleReload();
      await loadHistory();
    } catch (e) {
      reportError(e);
    }
  }

  // ---------------------------------------------------------------------------------
  // Live events

  function onEvent(event) {
    switch (event.type) {
      case 'message':
      case 'status':
      case 'media':
        if (state.chat?.id === event.chatId && event.message) {
          state.messages.set(event.message.id, event.message);
          drawMessages();
        }
        scheduleReload();
        break;
      case 'assignment':
        if (state.chat?.id === event.chatId) {
          state.chat = { ...state.chat, assignedOperatorId: event.assignedOperatorId };
          drawHead();
        }
        scheduleReload();
        break;
      case 'resync':
        scheduleReload();
        loadHistory();
        break;
      default:
        break;
    }
  }

  function setLive(on) {
    const el = $('#live');
    el.textContent = on ? 'live' : 'offline';
    el.classList.toggle('on', on);
  }

  /** Follows the operator stream until sign-out, reconnecting with backoff and resuming. */
  async function followEvents() {
    state.stream?.abort();
    const ctrl = new AbortController();
    state.stream = ctrl;
    let lastId = null;
    let delay = 1000;
    while (!ctrl.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch('/api/waba/operator/events', { headers, signal: ctrl.signal });
        if (res.status === 401) {
          signOut('Your session has ended. Sign in again.');
          return;
        }
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
            if (data.length && state.stream === ctrl) {
              const event = readJson(data.join('\n'));
              if (event) onEvent(event);
            }
          }
        }
      } catch {
        // Dropped or refused: try again below unless signed out.
      }
      if (state.stream === ctrl) setLive(false);
      await sleep(delay, ctrl.signal);
      delay = Math.min(delay * 2, STREAM_RETRY_MAX_MS);
    }
  }

  // ---------------------------------------------------------------------------------
  // Start

  function wire() {
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', () => signOut());
    $('#assigned-filter').addEventListener('change', (ev) => {
      state.filter = ev.target.value;
      loadChats();
    });
    window.addEventListener('hashchange', route);
    $('#composer').addEventListener('submit', send);
    $('#compose-text').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) {
        ev.preventDefault();
        $('#composer').requestSubmit();
      }
    });
    $('#compose-file').addEventListener('change', (ev) => {
      state.attachment = ev.target.files[0] || null;
      drawComposer();
    });
    $('#show-templates').addEventListener('click', () => {
      state.pickerOpen = true;
      drawComposer();
    });
    $('#hide-templates').addEventListener('click', () => {
      state.pickerOpen = false;
      drawComposer();
    });
    $('#template-select').addEventListener('change', drawTemplateParams);
    $('#messages').addEventListener('scroll', (ev) => {
      const list = ev.target;
      state.stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    });
    $('#template-picker').addEventListener('submit', sendTemplate);
    $('#take').addEventListener('click', () => assign(state.user?.id));
    $('#release').addEventListener('click', () => assign(null));
    $('#mark-read').addEventListener('click', markRead);
  }

  async function boot() {
    wire();
    if (!state.token || !state.user) {
      showLogin();
      return;
    }
    try {
      const me = await api('GET', '/api/auth/me');
      state.user = { ...state.user, id: me.id, email: me.email, role: me.role };
      startApp();
    } catch {
      signOut();
    }
  }

  boot();
})();
