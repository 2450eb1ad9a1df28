// The rstream viewer: the stream list, one stream live (a JSON tree that follows
// the live tail), its history (a time slider over the window and entries APIs,
// as the Python client reads them) and a chart of a numeric field.
//
// All stream data is inserted as text (textContent), never as HTML. A read token
// is kept in sessionStorage (this tab only) and sent as a header, never in a URL.
"use strict";

(() => {
  const TOKEN_KEY = "rstream.readToken";
  const MAX_REVISIONS = 100000;
  const LIVE_SPAN_US = 60e6; // the chart's range while following: the last minute
  const FLASH_MS = 1000; // how long a changed field stays highlighted
  const $ = (id) => document.getElementById(id);

  // The test and benchmark hooks: what the page applied, and its connection status.
  // busyMs: main-thread time spent parsing events and drawing, for the benchmark.
  const hooks = { revisions: [], status: "idle", applied: 0, frames: 0, busyMs: 0, SSEParser: null };
  window.rstreamViewer = hooks;

  // -- time: microseconds since the epoch, as Numbers (exact below 2**53) ----------

  const TIME_RE = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

  function parseTime(text) {
    const m = TIME_RE.exec(String(text).trim());
    if (!m) return NaN;
    const zone = m[4].toUpperCase() === "Z" ? "Z" : m[4];
    const ms = Date.parse(`${m[1]}T${m[2]}${zone}`);
    if (Number.isNaN(ms)) return NaN;
    return ms * 1000 + Number((m[3] || "").padEnd(6, "0").slice(0, 6));
  }

  // As rstream.core.timestamps.format_rfc3339: UTC, trailing zeros of the fraction trimmed.
  function formatTime(us) {
    const seconds = Math.floor(us / 1e6);
    const base = new Date(seconds * 1000).toISOString().slice(0, 19);
    const frac = us - seconds * 1e6;
    return frac ? `${base}.${String(frac).padStart(6, "0").replace(/0+$/, "")}Z` : `${base}Z`;
  }

  // -- mutations: the same rules as rstream/core/mutation.py -------------------------

  const MISSING = Symbol("missing");
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

  class MutationError extends Error {}

  function setKey(obj, key, value) {
    // "__proto__" is an ordinary field name in JSON; an assignment would set the prototype.
    if (key === "__proto__") {
      Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
    } else {
      obj[key] = value;
    }
  }

  function applyMutation(state, mutation) {
    if (!isObject(state) || !isObject(mutation)) throw new MutationError("state and mutation must be objects");
    return applyFields(state, mutation, false);
  }

  function applyFields(old, mutation, nested) {
    const out = { ...old };
    for (const key of Object.keys(mutation)) {
      const change = mutation[key];
      if (nested && key[0] === "$") throw new MutationError(`mutation object mixes operators (${key}) with fields`);
      if (!isObject(change)) {
        setKey(out, key, change);
        continue;
      }
      if (Object.keys(change).length === 0) continue;
      const value = applyNested(has(old, key) ? old[key] : MISSING, change);
      if (value === MISSING) delete out[key];
      else setKey(out, key, value);
    }
    return out;
  }

  function applyNested(prev, change) {
    if (Object.keys(change)[0][0] === "$") return applyOperators(prev, change);
    if (isObject(prev)) return applyFields(prev, change, true);
    if (prev === null || prev === MISSING) return applyFields({}, change, true);
    throw new MutationError("cannot apply a field mutation to a non-object");
  }

  function applyOperators(prev, ops) {
    for (const key of Object.keys(ops)) {
      if (key[0] !== "$") throw new MutationError(`mutation object mixes operators with fields (${key})`);
    }
    const present = (v) => v !== null && v !== MISSING;
    let value = has(ops, "$set") ? ops.$set : prev;
    if (has(ops, "$push")) {
      if (!Array.isArray(ops.$push)) throw new MutationError("$push takes an array");
      value = Array.isArray(value) ? value.concat(ops.$push) : ops.$push;
    }
    if (has(ops, "$pull")) {
      const pull = ops.$pull;
      if (!Array.isArray(pull) || !pull.every((i) => Number.isInteger(i) && i >= 0)) {
        throw new MutationError("$pull takes an array of indexes");
      }
      if (pull.length && present(value)) {
        if (!Array.isArray(value)) throw new MutationError("$pull needs an array");
        if (Math.max(...pull) >= value.length) throw new MutationError("$pull index out of range");
        const drop = new Set(pull);
        value = value.filter((_, i) => !drop.has(i));
      }
    }
    if (has(ops, "$truncate")) {
      const size = ops.$truncate;
      if (!Number.isInteger(size) || size < 0) throw new MutationError("$truncate takes a non-negative integer");
      if (present(value)) {
        if (!Array.isArray(value)) throw new MutationError("$truncate needs an array");
        if (size < value.length) value = value.slice(0, size);
      }
    }
    if (has(ops, "$mutateIdx")) {
      const changes = ops.$mutateIdx;
      if (!isObject(changes)) throw new MutationError("$mutateIdx takes an object");
      if (Object.keys(changes).length) value = applyIndexes(value, changes);
    }
    if (has(ops, "$unset")) {
      if (typeof ops.$unset !== "boolean") throw new MutationError("$unset takes true or false");
      if (ops.$unset) value = MISSING;
    }
    return value;
  }

  function applyIndexes(items, changes) {
    if (!Array.isArray(items)) throw new MutationError("$mutateIdx needs an array");
    const out = items.slice();
    for (const key of Object.keys(changes)) {
      const index = /^(0|[1-9][0-9]{0,17})$/.test(key) ? Number(key) : -1;
      if (index < 0 || index >= items.length) throw new MutationError(`$mutateIdx index ${key} is out of range`);
      const change = changes[key];
      if (!isObject(change)) {
        out[index] = change;
        continue;
      }
      if (Object.keys(change).length === 0) continue;
      const value = applyNested(out[index], change);
      if (value === MISSING) throw new MutationError("$unset cannot remove an array item");
      out[index] = value;
    }
    return out;
  }

  // -- HTTP: the token as a header, errors as exceptions -------------------------------

  class HTTPError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const headers = { ...extra };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async function checked(resp) {
    if (resp.ok) return resp;
    if (resp.status === 401) askToken();
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) message = `${resp.status}: ${body.error.message}`;
    } catch (_) {
      // Not the server's JSON (a proxy's page): the status says enough.
    }
    throw new HTTPError(resp.status, message);
  }

  async function api(path, signal) {
    return checked(await fetch(path, { headers: authHeaders({}), cache: "no-store", signal }));
  }

  const streamPath = (id) => `/v1/streams/${encodeURIComponent(id)}`;

  let asking = false;
  function askToken() {
    if (asking) return;
    asking = true;
    for (const view of ["list-view", "stream-view"]) $(view).hidden = true;
    if (sessionStorage.getItem(TOKEN_KEY)) {
      $("token-reason").textContent = "The server refused the token. Enter the read token again.";
      sessionStorage.removeItem(TOKEN_KEY);
    }
    setStatus("error", "needs a token");
    $("token-view").hidden = false;
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    location.reload(); // the same URL: the token is never part of one
  });

  function setStatus(state, text) {
    hooks.status = state;
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function showError(text) {
    $("error").textContent = text || "";
  }

  // -- the event stream: the framing rules of the SSE spec (CR, LF, CRLF) --------------

  class SSEParser {
    constructor(onEvent, onRetry) {
      this.onEvent = onEvent;
      this.onRetry = onRetry;
      this.partial = "";
      this.afterCR = false;
      this.event = "";
      this.data = [];
      this.idBuffer = "";
      this.lastId = ""; // the last event ID, set from idBuffer when a block ends
    }

    feed(text) {
      if (text === "") return; // a chunk holding only part of a character: keep afterCR
      let start = 0;
      if (this.afterCR && text[0] === "\n") start = 1; // the LF of a CRLF cut between chunks
      this.afterCR = false;
      const eol = /\r\n|\r|\n/g;
      eol.lastIndex = start;
      let m;
      while ((m = eol.exec(text)) !== null) {
        this.line(this.partial + text.slice(start, m.index));
        this.partial = "";
        start = eol.lastIndex;
        if (m[0] === "\r" && start === text.length) this.afterCR = true;
      }
      this.partial += text.slice(start);
    }

    line(line) {
      if (line === "") {
        this.lastId = this.idBuffer;
        if (this.data.length) {
          this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
        }
        this.event = "";
        this.data = [];
        return;
      }
      if (line[0] === ":") return;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (name === "event") this.event = value;
      else if (name === "data") this.data.push(value);
      else if (name === "id" && !value.includes("\0")) this.idBuffer = value;
      // Clamped as the Python client clamps it (rstream/client/sse.py): 100 ms to 10 min.
      else if (name === "retry" && /^[0-9]+$/.test(value)) this.onRetry(Math.min(Math.max(Number(value), 100), 600000));
    }
  }

  hooks.SSEParser = SSEParser; // for the tests, which feed it the conformance cases

  // -- the live state: entries, amends and resets, as rstream/client/livestate.py -------

  class LiveModel {
    constructor() {
      this.clear();
    }

    clear() {
      this.rev = null; // the revision of the last entry applied: the resume point
      this.state = null;
      this.prev = null; // the state before the newest mutation, which an amend replaces
      this.newest = null; // the newest entry's time
    }

    // Applies one event; true when the live state changed.
    apply(event) {
      if (event.event === "reset") {
        this.clear();
        return true;
      }
      if (event.event !== "entry" && event.event !== "amend") return false;
      const entry = JSON.parse(event.data);
      if (this.rev !== null && entry.rev <= this.rev) return false; // already applied
      const time = parseTime(entry.timestamp);
      if (entry.type === 0) {
        this.prev = null;
        this.state = entry.data;
      } else if (this.state === null) {
        return false; // a mutation with no snapshot before it: wait for one
      } else if ((event.event === "amend" || time === this.newest) && this.prev !== null) {
        this.state = applyMutation(this.prev, entry.data);
      } else {
        this.prev = this.state;
        this.state = applyMutation(this.state, entry.data);
      }
      this.newest = time;
      this.rev = entry.rev;
      hooks.revisions.push({ rev: entry.rev, timestamp: entry.timestamp });
      if (hooks.revisions.length > MAX_REVISIONS) hooks.revisions.splice(0, MAX_REVISIONS / 10);
      return true;
    }
  }

  // Follows /live with fetch() and a streaming reader (EventSource cannot send a
  // token header, and gives up for good on any non-200 answer). It resumes with
  // ?since=<last applied revision>, after the server's retry: delay, doubled on
  // each failed attempt (at most 10 s).
  class LiveTail {
    constructor(streamId, onChange) {
      this.streamId = streamId;
      this.onChange = onChange;
      this.model = new LiveModel();
      this.retryMs = 1000;
      this.failures = 0;
      this.stopped = false;
      this.abort = new AbortController();
    }

    stop() {
      this.stopped = true;
      this.abort.abort();
    }

    async run() {
      while (!this.stopped) {
        const since = this.model.rev === null ? "" : `?since=${this.model.rev}`;
        setStatus(this.failures ? "reconnecting" : "connecting");
        let reason;
        try {
          const resp = await fetch(`${streamPath(this.streamId)}/live${since}`, {
            headers: authHeaders({ Accept: "text/event-stream" }),
            cache: "no-store",
            signal: this.abort.signal,
          });
          if (resp.status === 401) await checked(resp); // asks for the token
          if (resp.status === 404) {
            // Not written yet (or a server restored without it): wait for it.
            reason = `there is no stream ${JSON.stringify(this.streamId)} yet`;
          } else if (!resp.ok) {
            reason = `the server answered ${resp.status}`;
          } else {
            this.failures = 0;
            setStatus("live");
            const heartbeat = Number(resp.headers.get("RStream-Heartbeat")) || 15;
            await this.read(resp.body, heartbeat);
            reason = "the connection ended";
          }
        } catch (error) {
          if (this.stopped) return;
          if (error instanceof HTTPError) return; // 401: the token form is shown
          reason = "the connection was lost";
        }
        this.failures += 1;
        const delay = Math.min(this.retryMs * 2 ** (this.failures - 1), 10000);
        setStatus("reconnecting", `offline: ${reason}; retrying in ${(delay / 1000).toFixed(1)} s`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }

    async read(body, heartbeat) {
      const reader = body.getReader();
      const decoder = new TextDecoder();
      const parser = new SSEParser(
        (event) => {
          if (this.model.apply(event)) this.onChange(this.model);
        },
        (ms) => {
          this.retryMs = ms;
        },
      );
      // No byte (not even a ping) for 2.5 heartbeats: the connection is dead.
      let timer = 0;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => reader.cancel(), heartbeat * 2500);
      };
      try {
        arm();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          const started = performance.now();
          parser.feed(decoder.decode(value, { stream: true }));
          hooks.busyMs += performance.now() - started;
        }
      } finally {
        clearTimeout(timer);
      }
    }
  }

  // -- history: the state at a time, read as RemoteStream.state_at reads it -----------

  class History {
    constructor(streamId) {
      this.streamId = streamId;
      this.windows = new Map(); // committed windows (they never change): start -> states
    }

    // {states: [{time, rev, state}] of the window up to `at`, index of the state at `at`}
    async at(at) {
      const query = encodeURIComponent(formatTime(at));
      const resp = await api(`${streamPath(this.streamId)}/window?at=${query}`);
      const window = await resp.json();
      let states;
      if (window.end !== null) {
        states = this.windows.get(window.start);
        if (!states) {
          states = await this.replay(window.start, window.end);
          if (this.windows.size >= 32) this.windows.delete(this.windows.keys().next().value);
          this.windows.set(window.start, states);
        }
      } else {
        states = await this.replay(window.start, formatTime(at + 1));
      }
      let index = -1;
      for (let lo = 0, hi = states.length; lo < hi; ) {
        const mid = (lo + hi) >> 1;
        if (states[mid].time <= at) {
          index = mid;
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      return { states, index, start: parseTime(window.start), end: window.end && parseTime(window.end) };
    }

    async replay(start, end) {
      const out = [];
      let state = null;
      let from = start;
      for (;;) {
        const query = `start=${encodeURIComponent(from)}&end=${encodeURIComponent(end)}`;
        const resp = await api(`${streamPath(this.streamId)}/entries?${query}`);
        for (const line of (await resp.text()).split("\n")) {
          if (!line.trim()) continue;
          const entry = JSON.parse(line);
          state = entry.type === 0 ? entry.data : applyMutation(state, entry.data);
          out.push({ time: parseTime(entry.timestamp), rev: entry.rev, state });
        }
        from = resp.headers.get("RStream-Next-Start");
        if (!from) return out;
      }
    }
  }

  // -- the JSON tree: built once, then patched where the state changed ----------------

  const sameJSON = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const kindOf = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

  class Tree {
    constructor(root, onPick) {
      this.root = root;
      this.value = undefined;
      this.picked = null;
      this.flashing = new Map(); // element -> when it was marked changed
      this.sweeping = false;
      root.addEventListener("click", (event) => {
        const target = event.target;
        if (target.classList && target.classList.contains("t-number")) onPick(JSON.parse(target.dataset.path));
      });
    }

    show(value, highlight) {
      if (this.value === undefined || !isObject(value) || !isObject(this.value)) {
        this.root.replaceChildren();
        if (value === null) {
          this.root.textContent = "No state at this time.";
        } else {
          this.fill(this.root, value, []);
        }
      } else if (value !== this.value) {
        this.patch(this.root, this.value, value, [], highlight);
      }
      this.value = value;
      this.markPicked();
    }

    markPicked() {
      for (const el of this.root.querySelectorAll(".picked")) el.classList.remove("picked");
      if (this.picked === null) return;
      const el = this.root.querySelector(`[data-path="${CSS.escape(JSON.stringify(this.picked))}"]`);
      if (el) el.classList.add("picked");
    }

    fill(container, value, path) {
      const keys = Object.keys(value);
      const map = new Map();
      for (const key of keys) {
        const item = Array.isArray(value) ? Number(key) : key;
        const node = this.node(item, value[key], path.concat([item]));
        map.set(key, node);
        container.append(node);
      }
      container.rstreamNodes = map;
      container.rstreamKeys = keys.join("\u0000");
    }

    node(key, value, path) {
      const built = this.build(key, value, path);
      built.rstreamIndex = typeof key === "number";
      return built;
    }

    build(key, value, path) {
      const kind = kindOf(value);
      const label = document.createElement("span");
      label.className = "key";
      label.textContent = String(key);
      if ((kind === "object" || kind === "array") && Object.keys(value).length) {
        const details = document.createElement("details");
        details.open = true;
        const summary = document.createElement("summary");
        const meta = document.createElement("span");
        meta.className = "meta";
        summary.append(label, meta);
        const children = document.createElement("div");
        children.className = "children";
        details.append(summary, children);
        this.fill(children, value, path);
        this.setMeta(meta, value);
        details.rstreamKind = kind;
        return details;
      }
      const leaf = document.createElement("div");
      leaf.className = "leaf";
      const text = document.createElement("span");
      text.className = `value t-${kind}`;
      text.dataset.path = JSON.stringify(path);
      text.textContent = JSON.stringify(value);
      leaf.append(label, text);
      leaf.rstreamKind = "leaf";
      return leaf;
    }

    setMeta(meta, value) {
      const n = Object.keys(value).length;
      meta.textContent = Array.isArray(value) ? `[${n}]` : `{${n}}`;
    }

    patch(container, old, value, path, highlight) {
      const keys = Object.keys(value);
      const nodes = container.rstreamNodes;
      const joined = keys.join("\u0000");
      if (joined !== container.rstreamKeys && !Array.isArray(value)) {
        // Fields came or went: this level is rebuilt (its children are few next to a state's).
        container.replaceChildren();
        this.fill(container, value, path);
        for (const [key, node] of container.rstreamNodes) {
          // A replaced object brings equal values as new objects: compare the values.
          const same = nodes.has(key) && (old[key] === value[key] || sameJSON(old[key], value[key]));
          if (!same) this.flash(node, highlight);
        }
        return;
      }
      // An array that grew or shrank: the items both have are patched, the rest
      // removed or added.
      for (const [key, node] of nodes) {
        if (!has(value, key)) {
          node.remove();
          nodes.delete(key);
        }
      }
      for (const key of keys) {
        if (nodes.has(key)) {
          this.patchItem(container, old[key], value[key], key, path, highlight);
        } else {
          const fresh = this.node(Number(key), value[key], path.concat([Number(key)]));
          container.append(fresh);
          nodes.set(key, fresh);
          this.flash(fresh, highlight);
        }
      }
      container.rstreamKeys = joined;
    }

    patchItem(container, a, b, key, path, highlight) {
      if (a === b) return;
      const node = container.rstreamNodes.get(key);
      const item = node.rstreamIndex ? Number(key) : key;
      const kind = kindOf(b);
      const nested = (kind === "object" || kind === "array") && Object.keys(b).length;
      if (nested && node.rstreamKind === kind && kindOf(a) === kind) {
        this.setMeta(node.querySelector(".meta"), b);
        this.patch(node.lastChild, a, b, path.concat([item]), highlight);
      } else if (!nested && node.rstreamKind === "leaf") {
        const text = node.lastChild;
        text.className = `value t-${kind}`;
        text.textContent = JSON.stringify(b);
        this.flash(text, highlight);
      } else {
        const fresh = this.node(item, b, path.concat([item]));
        node.replaceWith(fresh);
        container.rstreamNodes.set(key, fresh);
        this.flash(fresh, highlight);
      }
    }

    // Marks a changed field for FLASH_MS. One timer sweeps them all: at 100 changes
    // per second, an animation per field would keep a thousand running at once.
    flash(el, highlight) {
      if (!highlight) return;
      el.classList.add("changed");
      this.flashing.delete(el); // re-inserted last: the map stays in time order
      this.flashing.set(el, performance.now());
      if (!this.sweeping) {
        this.sweeping = true;
        setTimeout(() => this.sweep(), FLASH_MS);
      }
    }

    sweep() {
      const now = performance.now();
      for (const [el, since] of this.flashing) {
        const left = since + FLASH_MS - now;
        if (left > 0) {
          setTimeout(() => this.sweep(), left);
          return;
        }
        el.classList.remove("changed");
        this.flashing.delete(el);
      }
      this.sweeping = false;
    }
  }

  // -- the chart: one numeric field over the visible range, as an SVG polyline --------

  const SVG = "http://www.w3.org/2000/svg";

  function valueAt(state, path) {
    let v = state;
    for (const key of path) {
      if (v === null || typeof v !== "object" || !has(v, key)) return undefined;
      v = v[key];
    }
    return v;
  }

  function drawChart(path, points, from, to) {
    const svg = $("chart");
    svg.replaceChildren();
    if (path === null) return;
    $("chart-title").textContent = `Chart of ${path.map(String).join(".")}`;
    const values = [];
    for (const p of points) {
      const v = valueAt(p.state, path);
      if (typeof v === "number" && p.time >= from && p.time <= to) values.push([p.time, v]);
    }
    $("chart-range").textContent = `${formatTime(from)} to ${formatTime(to)}: ${values.length} points`;
    if (!values.length) return;
    let lo = Math.min(...values.map((p) => p[1]));
    let hi = Math.max(...values.map((p) => p[1]));
    if (hi === lo) {
      hi += 1;
      lo -= 1;
    }
    const width = 600;
    const height = 260;
    const pad = 22;
    const x = (t) => ((t - from) / Math.max(1, to - from)) * width;
    const y = (v) => pad + (1 - (v - lo) / (hi - lo)) * (height - 2 * pad);
    const coords = [];
    let last = null;
    for (const [t, v] of values) {
      if (last !== null) coords.push(`${x(t).toFixed(1)},${y(last).toFixed(1)}`); // a step: states hold
      coords.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      last = v;
    }
    coords.push(`${width},${y(last).toFixed(1)}`);
    for (const [v, dy] of [[hi, pad], [lo, height - pad]]) {
      const grid = document.createElementNS(SVG, "line");
      grid.setAttribute("class", "grid");
      grid.setAttribute("x1", "0");
      grid.setAttribute("x2", String(width));
      grid.setAttribute("y1", String(dy));
      grid.setAttribute("y2", String(dy));
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("class", "axis");
      label.setAttribute("x", "2");
      label.setAttribute("y", String(dy - 4));
      label.textContent = String(Number(v.toPrecision(6)));
      svg.append(grid, label);
    }
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
  }

  // -- the stream list ----------------------------------------------------------------

  async function openList() {
    $("list-view").hidden = false;
    let streams = [];
    const render = () => {
      const filter = $("filter").value.trim().toLowerCase();
      const rows = [];
      for (const s of streams) {
        if (filter && !s.id.toLowerCase().includes(filter)) continue;
        const row = document.createElement("tr");
        const link = document.createElement("a");
        link.href = `/ui/streams/${encodeURIComponent(s.id)}`;
        link.textContent = s.id;
        const cells = [link, s.last === null ? "no entries" : s.last, String(s.revision)];
        for (const content of cells) {
          const cell = document.createElement("td");
          cell.append(content);
          row.append(cell);
        }
        row.dataset.id = s.id;
        rows.push(row);
      }
      $("streams").tBodies[0].replaceChildren(...rows);
      $("list-empty").hidden = rows.length > 0;
    };
    $("filter").addEventListener("input", render);
    for (;;) {
      try {
        streams = (await (await api("/v1/streams")).json()).streams;
        setStatus("live", `${streams.length} streams`);
        showError("");
        render();
      } catch (error) {
        if (error instanceof HTTPError && error.status === 401) return;
        setStatus("offline", "offline");
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  // -- one stream ---------------------------------------------------------------------

  function openStream(streamId, atText) {
    $("stream-view").hidden = false;
    $("crumb").textContent = streamId;
    document.title = `${streamId} · rstream`;
    const tree = new Tree($("tree"), (path) => {
      chartPath = path;
      tree.picked = path;
      tree.markPicked();
      dirty = true;
      schedule();
    });
    const past = new History(streamId);
    const slider = $("slider");
    const atInput = $("at-input");
    let chartPath = null;
    let liveStates = []; // {time, state} of the last minute followed, for the chart
    let shownAt = null; // null: following live; else the time shown
    let viewed = null; // the history result shown
    let dirty = true;
    let frame = 0;
    let first = null;
    let newest = null;
    let pending = null;
    let loading = false;

    const setRange = () => {
      if (first === null) return;
      slider.min = String(Math.floor(first / 1000));
      slider.max = String(Math.ceil((newest ?? first) / 1000));
      if (shownAt === null) slider.value = slider.max;
    };

    const shareLink = () => {
      const base = `/ui/streams/${encodeURIComponent(streamId)}`;
      const link = shownAt === null ? base : `${base}?at=${encodeURIComponent(formatTime(shownAt))}`;
      $("share").href = link;
      if (location.pathname + location.search !== link) window.history.replaceState(null, "", link);
    };

    const render = () => {
      frame = 0;
      const started = performance.now();
      try {
        if (dirty) draw();
        setRange(); // the stream grows while history is shown too
      } finally {
        hooks.busyMs += performance.now() - started;
      }
    };
    const draw = () => {
      dirty = false;
      hooks.frames += 1;
      if (shownAt === null) {
        tree.show(tail.model.state, true);
        const rev = tail.model.rev;
        $("tree").dataset.shown = rev === null ? "" : `live ${rev}`;
        $("mode").textContent =
          rev === null ? "Live: waiting for the first state" : `Live at revision ${rev}, ${formatTime(tail.model.newest)}`;
        // The field follows the newest time, unless the user is typing a time into it.
        if (newest !== null && document.activeElement !== atInput) atInput.value = formatTime(newest);
        const to = newest ?? 0;
        const from = liveStates.length ? Math.max(liveStates[0].time, to - LIVE_SPAN_US) : to;
        drawChart(chartPath, liveStates, from, to);
      } else {
        const item = viewed && viewed.index >= 0 ? viewed.states[viewed.index] : null;
        tree.show(item ? item.state : null, false);
        $("tree").dataset.shown = viewed && viewed.at === shownAt ? formatTime(shownAt) : "";
        $("mode").textContent = item
          ? `History at ${formatTime(shownAt)} (revision ${item.rev}, written ${formatTime(item.time)})`
          : `History at ${formatTime(shownAt)}: no state yet`;
        if (viewed) {
          const end = viewed.end ?? (viewed.states.length ? viewed.states[viewed.states.length - 1].time : shownAt);
          drawChart(chartPath, viewed.states, viewed.start, Math.max(end, shownAt));
        }
      }
      shareLink();
    };
    const schedule = () => {
      if (!frame) frame = requestAnimationFrame(render);
    };

    const tail = new LiveTail(streamId, (model) => {
      if (model.newest !== null) {
        newest = newest === null ? model.newest : Math.max(newest, model.newest);
        if (first === null) first = model.newest;
        if (model.state !== null) liveStates.push({ time: model.newest, state: model.state });
        const cut = newest - LIVE_SPAN_US;
        if (liveStates.length > 4096 || (liveStates.length && liveStates[0].time < cut)) {
          liveStates = liveStates.filter((p) => p.time >= cut).slice(-4096);
        }
      }
      hooks.applied += 1;
      if (shownAt === null) dirty = true;
      schedule();
    });

    const showAt = async (at) => {
      if (loading) {
        pending = at;
        return;
      }
      loading = true;
      shownAt = at;
      try {
        viewed = await past.at(at);
        viewed.at = at;
        showError("");
      } catch (error) {
        viewed = null;
        showError(error.status === 404 ? "No state at this time: it is before the first snapshot." : error.message);
      } finally {
        loading = false;
      }
      dirty = true;
      schedule();
      if (pending !== null && shownAt !== null) {
        const next = pending;
        pending = null;
        showAt(next);
      }
    };

    slider.addEventListener("input", () => {
      const at = Number(slider.value) * 1000;
      atInput.value = formatTime(at);
      showAt(at);
    });
    atInput.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      const at = parseTime(atInput.value);
      if (Number.isNaN(at)) {
        showError("Write the time as RFC 3339, for example 2024-01-01T12:00:00.5Z");
        return;
      }
      slider.value = String(Math.round(at / 1000));
      showAt(at);
    });
    $("live-button").addEventListener("click", () => {
      shownAt = null;
      pending = null;
      viewed = null;
      showError("");
      dirty = true;
      schedule();
    });

    api(streamPath(streamId))
      .then((r) => r.json())
      .then((info) => {
        if (info.first !== null) first = parseTime(info.first);
        if (info.last !== null) newest = Math.max(newest ?? 0, parseTime(info.last));
        dirty = true;
        schedule();
      })
      .catch((error) => {
        if (error.status !== 404) showError(error.message); // 404: the live status says it
      });

    if (atText) {
      const at = parseTime(atText);
      if (Number.isNaN(at)) showError(`?at=${atText} is not an RFC 3339 time`);
      else {
        atInput.value = formatTime(at);
        showAt(at);
      }
    }
    tail.run();
  }

  // -- start --------------------------------------------------------------------------

  const match = /^\/ui\/streams\/([^/]+)$/.exec(location.pathname);
  if (match) openStream(decodeURIComponent(match[1]), new URLSearchParams(location.search).get("at"));
  else openList();
})();
