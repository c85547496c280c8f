// The viewer of /docs: reads the OpenAPI document named by <body data-spec>, lists the
// operations by tag with their parameters and schemas, and lets each one be tried with a
// token or an API key. Plain DOM, no dependencies: the page loads nothing from elsewhere.
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  const MAX_DEPTH = 6;

  // --- Small DOM helpers -----------------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Text where `code` spans become <code> elements. */
  function prose(text) {
    const out = [];
    String(text || "").split(/(`[^`]*`)/).forEach((part) => {
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
        out.push(el("code", { text: part.slice(1, -1) }));
      } else if (part) {
        out.push(part);
      }
    });
    return out;
  }

  // --- Credentials -------------------------------------------------------------------------

  const store = window.sessionStorage;
  const tokenInput = document.getElementById("token");
  const keyInput = document.getElementById("apikey");
  tokenInput.value = store.getItem("wagate.token") || "";
  keyInput.value = store.getItem("wagate.apikey") || "";
  tokenInput.addEventListener("input", () => store.setItem("wagate.token", tokenInput.value.trim()));
  keyInput.addEventListener("input", () => store.setItem("wagate.apikey", keyInput.value.trim()));
  document.getElementById("credentials").addEventListener("submit", (e) => e.preventDefault());

  function authHeaders() {
    const token = tokenInput.value.trim();
    const key = keyInput.value.trim();
    if (token) return { Authorization: "Bearer " + token };
    if (key) return { "x-api-key": key };
    return {};
  }

  // --- Schemas -----------------------------------------------------------------------------

  let spec = null;

  function refName(ref) {
    return ref.split("/").pop();
  }

  /** Follows a local `$ref` (to schemas, responses, ...). */
  function resolve(obj) {
    let seen = 0;
    while (obj && obj.$ref && seen++ < 20) {
      const parts = obj.$ref.replace(/^#\//, "").split("/");
      obj = parts.reduce((o, p) => (o ? o[p] : undefined), spec);
    }
    return obj || {};
  }

  /** A one-line description of a schema's type. */
  function typeLabel(schema) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema.$ref);
    if (schema.enum) return "one of " + schema.enum.map((v) => JSON.stringify(v)).join(", ");
    const alternatives = schema.oneOf || schema.anyOf;
    if (alternatives) return alternatives.map(typeLabel).join(" | ");
    if (schema.allOf) return schema.allOf.map(typeLabel).join(" & ");
    let types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
    types = types.map((t) => {
      if (t === "array") return "array of " + typeLabel(schema.items);
      if (t === "string" && schema.format) return "string (" + schema.format + ")";
      if (t === "integer" && schema.format) return "integer (" + schema.format + ")";
      return t;
    });
    return types.length ? types.join(" | ") : "any";
  }

  /** Constraints worth showing next to a type. */
  function constraints(schema) {
    const parts = [];
    if (schema.minimum !== undefined) parts.push("≥ " + schema.minimum);
    if (schema.maximum !== undefined) parts.push("≤ " + schema.maximum);
    if (schema.maxLength !== undefined) parts.push("max length " + schema.maxLength);
    if (schema.pattern) parts.push("pattern " + schema.pattern);
    return parts.length ? " (" + parts.join(", ") + ")" : "";
  }

  /** The properties of an object schema, allOf parts merged. */
  function objectParts(schema, depth) {
    schema = resolve(schema);
    let props = Object.assign({}, schema.properties || {});
    let required = new Set(schema.required || []);
    for (const part of schema.allOf || []) {
      if (depth > MAX_DEPTH) break;
      const sub = objectParts(part, depth + 1);
      props = Object.assign(props, sub.props);
      sub.required.forEach((r) => required.add(r));
    }
    return { props, required };
  }

  /** A schema as a nested list of its properties. */
  function schemaTree(schema, depth) {
    depth = depth || 0;
    const resolved = resolve(schema);
    const head = el("div", {},
      el("span", { class: "type", text: typeLabel(schema) }),
      schema.$ref && resolved.description ? [" — ", ...prose(resolved.description)] : null);
    if (depth > MAX_DEPTH) return head;
    const target = resolved.type === "array" || (Array.isArray(resolved.type) && resolved.type.includes("array"))
      ? resolve(resolved.items)
      : resolved;
    const { props, required } = objectParts(target, depth);
    const names = Object.keys(props);
    if (!names.length) return head;
    const list = el("ul", { class: "schema" });
    for (const name of names) {
      const prop = props[name];
      const inner = resolve(prop);
      const nested = (inner.properties || inner.allOf || (inner.items && resolve(inner.items).properties)) && depth < MAX_DEPTH;
      list.append(el("li", {},
        el("span", { class: "prop", text: name }),
        required.has(name) ? el("span", { class: "required", text: "required" }) : null,
        " ",
        nested ? null : el("span", { class: "type", text: typeLabel(prop) + constraints(inner) }),
        prop.description || (!nested && inner.description) ? [" — ", ...prose(prop.description || inner.description)] : null,
        nested ? schemaTree(prop, depth + 1) : null));
    }
    return el("div", {}, head, list);
  }

  /** An example value for a schema: its example, else something of the right shape. */
  function example(schema, depth) {
    depth = depth || 0;
    const s = resolve(schema);
    if (s.example !== undefined) return s.example;
    if (s.enum) return s.enum[0];
    if (depth > MAX_DEPTH) return null;
    const alternatives = s.oneOf || s.anyOf;
    if (alternatives) {
      const first = alternatives.find((a) => resolve(a).type !== "null") || alternatives[0];
      return example(first, depth + 1);
    }
    const types = Array.isArray(s.type) ? s.type.filter((t) => t !== "null") : [s.type];
    if (s.allOf || s.properties || types[0] === "object") {
      const { props, required } = objectParts(s, depth);
      const out = {};
      for (const [name, prop] of Object.entries(props)) {
        if (required.has(name) || resolve(prop).example !== undefined) out[name] = example(prop, depth + 1);
      }
      return out;
    }
    switch (types[0]) {
      case "array": return [example(s.items, depth + 1)];
      case "integer":
      case "number": return s.minimum !== undefined ? s.minimum : 0;
      case "boolean": return false;
      case "string": return s.format === "date-time" ? new Date().toISOString() : "";
      default: return null;
    }
  }

  // --- Operations --------------------------------------------------------------------------

  function parametersTable(params) {
    return el("table", {},
      el("thead", {}, el("tr", {}, ["Name", "In", "Type", "Description"].map((h) => el("th", { text: h })))),
      el("tbody", {}, params.map((p) => el("tr", {},
        el("td", {}, el("code", { text: p.name }), p.required ? el("span", { class: "required", text: "required" }) : null),
        el("td", { text: p.in }),
        el("td", { class: "type", text: typeLabel(p.schema) + constraints(resolve(p.schema || {})) }),
        el("td", {}, prose(p.description))))));
  }

  function contentBlock(content) {
    return Object.entries(content || {}).map(([type, media]) => el("div", {},
      el("div", { class: "muted small", text: type }),
      media.schema ? schemaTree(media.schema) : null));
  }

  function responsesBlock(responses) {
    return Object.entries(responses || {}).map(([status, response]) => {
      const r = resolve(response);
      return el("div", { class: "response" },
        el("span", { class: "status", text: status }),
        prose(r.description),
        contentBlock(r.content));
    });
  }

  function isPublic(op) {
    const security = op.security !== undefined ? op.security : spec.security;
    return !security || security.length === 0;
  }

  /** The "try it" form of an operation. */
  function tryForm(method, path, op) {
    const params = (op.parameters || []).map(resolve);
    const inputs = {};
    const fields = el("div", { class: "fields" });
    for (const p of params) {
      const input = el("input", {
        type: "text",
        placeholder: p.example !== undefined ? String(p.example) : typeLabel(p.schema),
        spellcheck: "false",
      });
      inputs[p.name] = { param: p, input };
      fields.append(el("label", {}, el("code", { text: p.name }), " ", el("span", { class: "muted small", text: p.in })), input);
    }
    const body = op.requestBody ? resolve(op.requestBody) : null;
    const bodyType = body ? Object.keys(body.content || {})[0] : null;
    let bodyInput = null;
    const formParts = {};
    if (bodyType === "multipart/form-data") {
      const { props } = objectParts(body.content[bodyType].schema, 0);
      for (const [name, prop] of Object.entries(props)) {
        const binary = resolve(prop).format === "binary";
        const input = binary ? el("input", { type: "file" }) : el("input", { type: "text", spellcheck: "false" });
        formParts[name] = { input, binary };
        fields.append(el("label", {}, el("code", { text: name }), " ", el("span", { class: "muted small", text: "form" })), input);
      }
    } else if (bodyType) {
      const sample = example(body.content[bodyType].schema);
      bodyInput = el("textarea", { spellcheck: "false" });
      bodyInput.value = JSON.stringify(sample, null, 2);
    }
    const output = el("div", {});
    const send = el("button", { type: "submit", text: "Send" });
    const stop = el("button", { type: "button", class: "secondary hidden", text: "Stop" });
    let controller = null;
    stop.addEventListener("click", () => controller && controller.abort());

    const form = el("form", { class: "try" },
      el("h4", { text: "Try it" }),
      fields.children.length ? fields : null,
      bodyInput ? [el("div", { class: "muted small", text: bodyType }), bodyInput] : null,
      el("div", { class: "buttons" }, send, stop),
      output);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      let url = path;
      const query = new URLSearchParams();
      const headers = authHeaders();
      for (const { param, input } of Object.values(inputs)) {
        const value = input.value;
        if (param.in === "path") url = url.replace("{" + param.name + "}", encodeURIComponent(value));
        else if (value === "") continue;
        else if (param.in === "query") query.append(param.name, value);
        else if (param.in === "header") headers[param.name] = value;
      }
      if (query.toString()) url += "?" + query.toString();
      const init = { method: method.toUpperCase(), headers };
      if (bodyInput) {
        headers["Content-Type"] = bodyType;
        init.body = bodyInput.value;
      } else if (bodyType === "multipart/form-data") {
        const data = new FormData();
        for (const [name, { input, binary }] of Object.entries(formParts)) {
          if (binary && input.files.length) data.append(name, input.files[0]);
          else if (!binary && input.value !== "") data.append(name, input.value);
        }
        init.body = data;
      }
      controller = new AbortController();
      init.signal = controller.signal;
      send.disabled = true;
      stop.classList.remove("hidden");
      output.replaceChildren(el("p", { class: "muted", text: init.method + " " + url + " …" }));
      try {
        const response = await fetch(url, init);
        await showResponse(response, output, init.method + " " + url);
      } catch (err) {
        output.replaceChildren(el("pre", { class: "result", text: err.name === "AbortError" ? "stopped" : String(err) }));
      } finally {
        send.disabled = false;
        stop.classList.add("hidden");
        controller = null;
      }
    });
    return form;
  }

  /** Shows a response: JSON pretty-printed, images as images, streams as they arrive. */
  async function showResponse(response, output, what) {
    const type = response.headers.get("content-type") || "";
    const line = el("p", {}, el("span", { class: "status", text: String(response.status) }), what, " ",
      el("span", { class: "muted small", text: type }));
    const pre = el("pre", { class: "result" });
    output.replaceChildren(line);
    if (type.startsWith("text/event-stream") && response.body) {
      output.append(pre);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pre.textContent += decoder.decode(value, { stream: true });
      }
      return;
    }
    if (type.startsWith("image/")) {
      const blob = await response.blob();
      const url = await new Promise((resolveUrl) => {
        const reader = new FileReader();
        reader.onload = () => resolveUrl(reader.result);
        reader.readAsDataURL(blob);
      });
      output.append(el("img", { class: "result", src: url, alt: "response image" }));
      return;
    }
    const text = await response.text();
    if (type.includes("json")) {
      try {
        pre.textContent = JSON.stringify(JSON.parse(text), null, 2);
      } catch (_) {
        pre.textContent = text;
      }
    } else if (/^(text\/|application\/(openmetrics|xml))/.test(type) || !type) {
      pre.textContent = text;
    } else {
      pre.textContent = "(" + text.length + " bytes of " + type + ")";
    }
    output.append(pre);
  }

  function operationBlock(method, path, op) {
    const details = el("details", { class: "op", id: op.operationId },
      el("summary", {},
        el("span", { class: "method " + method, text: method }),
        el("span", { class: "path", text: path }),
        el("span", { class: "summary" }, prose(op.summary)),
        el("span", { class: "lock", text: isPublic(op) ? "public" : "🔒 token or key" })));
    // The body is built when first opened: the document has many operations.
    details.addEventListener("toggle", () => {
      if (!details.open || details.dataset.built) return;
      details.dataset.built = "1";
      const params = (op.parameters || []).map(resolve);
      const body = op.requestBody ? resolve(op.requestBody) : null;
      details.append(el("div", { class: "body" },
        op.description ? el("p", { class: "description" }, prose(op.description)) : null,
        params.length ? [el("h4", { text: "Parameters" }), parametersTable(params)] : null,
        body ? [el("h4", { text: "Request body" + (body.required ? "" : " (optional)") }), contentBlock(body.content)] : null,
        el("h4", { text: "Responses" }),
        responsesBlock(op.responses),
        tryForm(method, path, op)));
    });
    return details;
  }

  // --- The page ----------------------------------------------------------------------------

  function render() {
    document.getElementById("title").textContent = (spec.info && spec.info.title || "API") + " API";
    document.getElementById("version").textContent =
      "version " + (spec.info && spec.info.version || "?") + " · OpenAPI " + spec.openapi;
    document.getElementById("description").replaceChildren(...prose(spec.info && spec.info.description));
    document.title = document.getElementById("title").textContent;

    const byTag = new Map((spec.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
        byTag.get(tag).ops.push({ method, path, op });
      }
    }
    const nav = document.getElementById("tags");
    const main = document.getElementById("operations");
    main.replaceChildren();
    nav.replaceChildren();
    for (const { tag, ops } of byTag.values()) {
      if (!ops.length) continue;
      ops.sort((a, b) => a.path.localeCompare(b.path) || METHODS.indexOf(a.method) - METHODS.indexOf(b.method));
      nav.append(el("a", { href: "#tag-" + tag.name, text: tag.name }));
      const section = el("section", { class: "tag", id: "tag-" + tag.name, "data-tag": tag.name },
        el("h2", { text: tag.name }),
        tag.description ? el("p", { class: "muted" }, prose(tag.description)) : null);
      for (const { method, path, op } of ops) {
        const block = operationBlock(method, path, op);
        block.dataset.search = [method, path, op.summary || "", tag.name].join(" ").toLowerCase();
        section.append(block);
      }
      main.append(section);
    }
    const target = location.hash && document.getElementById(location.hash.slice(1));
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  document.getElementById("filter").addEventListener("input", (e) => {
    const words = e.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const section of document.querySelectorAll("section.tag")) {
      let shown = 0;
      for (const op of section.querySelectorAll("details.op")) {
        const match = words.every((w) => op.dataset.search.includes(w));
        op.classList.toggle("hidden", !match);
        if (match) shown++;
      }
      section.classList.toggle("hidden", shown === 0);
    }
  });

  fetch(document.body.dataset.spec)
    .then((r) => {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    })
    .then((doc) => {
      spec = doc;
      render();
    })
    .catch((err) => {
      document.getElementById("status").textContent = "Cannot load the API document: " + err.message;
    });
})();
