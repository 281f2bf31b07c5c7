// freesky dashboard: the page holds the services and addresses; this script browses
// the channels, movies, series and guide matches a page at a time through the JSON
// API (search on the server), and adds the admin controls, copy buttons, the tests and
// the player. Everything shown comes from upstreams: it is inserted as text only, never
// as HTML.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const message = $("#message");
  const token = $("#admin-token");
  const TOKEN_KEY = "freesky-admin-token";

  function say(text, ok) {
    message.textContent = text;
    message.className = ok ? "ok" : "error";
  }

  // The admin token lives in this tab's sessionStorage only.
  try { token.value = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { /* storage off */ }
  token.addEventListener("input", () => {
    try { sessionStorage.setItem(TOKEN_KEY, token.value); } catch (_) { /* storage off */ }
  });

  // The admin token's header for a request to this server (never to another host);
  // none when no token is typed.
  function authHeaders(url) {
    const headers = {};
    if (token.value && new URL(url, location.href).origin === location.origin) {
      headers["Authorization"] = "Bearer " + token.value;
    }
    return headers;
  }
  // Every request of the script sends the token only, never the browser's stored
  // logins (`credentials: "omit"`), so a 401 of a route that wants a viewer account
  // (`require_account`) is an error shown in the page, not the browser's login dialog.
  const OWN = { credentials: "omit" };

  // Calls the JSON API; resolves to the parsed body, or throws the API's `error` text
  // (with `status`, the HTTP status, or `aborted` when `signal` cancelled the call).
  async function api(method, path, body, signal) {
    const headers = authHeaders(path);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { ...OWN, method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      const err = new Error("network error: " + e.message);
      err.aborted = e.name === "AbortError";
      throw err;
    }
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((data && data.error) || ("HTTP " + res.status));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  // Services: enable/disable and priority.
  // `keepPriority`: a periodic refresh leaves the priority box to the user.
  // Answers whether the service's state or priority changed (the lineup follows both).
  function showService(row, status, keepPriority) {
    const before = row.dataset.enabled + "/" + row.dataset.priority;
    row.dataset.enabled = String(status.enabled);
    row.dataset.priority = String(status.priority);
    $(".state", row).textContent = status.enabled ? "enabled" : "disabled";
    $(".toggle", row).textContent = status.enabled ? "disable" : "enable";
    if (!keepPriority) $(".priority-input", row).value = status.priority;
    if (status.circuit) {
      const circuit = $(".circuit", row);
      circuit.textContent = status.circuit;
      circuit.className = "circuit circuit-" + status.circuit;
    }
    if ("latency_ms" in status) {
      const ms = status.latency_ewma_ms ?? status.latency_ms;
      $(".latency", row).textContent = ms == null ? "–" : Math.round(ms) + " ms";
    }
    // Its calls' last error, else its streams' (as the page is drawn).
    if ("last_error" in status) {
      $(".last-error", row).textContent = status.last_error ||
        (status.last_stream_error
          ? "stream, " + (status.last_stream_error_at || "") + ": " + status.last_stream_error
          : "");
    }
    if ("channel_count" in status) $(".channels", row).textContent = String(status.channel_count);
    return before !== row.dataset.enabled + "/" + row.dataset.priority;
  }
  // The channel and catalogue lists again: a service switched or moved changes them.
  function lineupChanged() {
    for (const reload of reloaders) reload();
  }
  // Every service row from /api/services/status: after a channel test, and every
  // few seconds while the page is visible (changes made elsewhere show up).
  // Counts the changes made from this page: a refresh asked for before one answers
  // after it with the state before it, and is dropped.
  let serviceActs = 0;
  async function refreshServices() {
    const acts = serviceActs;
    let all;
    try { all = await api("GET", "/api/services/status"); } catch (_) { return; }
    if (acts !== serviceActs) return;
    let changed = false;
    for (const status of all || []) {
      const row = $$("#services tr[data-service]").find((r) => r.dataset.service === status.name);
      if (row && showService(row, status, true)) changed = true;
    }
    if (changed) lineupChanged();
  }
  setInterval(() => { if (!document.hidden) refreshServices(); }, 3000);
  function bindService(row) {
    const name = row.dataset.service;
    const base = "/api/services/" + encodeURIComponent(name);
    row.dataset.enabled = String($(".state", row).textContent.trim() === "enabled");
    // As the server wrote it (a browser may restore what was typed before a reload).
    row.dataset.priority = $(".priority-input", row).defaultValue;
    $(".toggle", row).addEventListener("click", async (ev) => {
      const enable = $(".state", row).textContent.trim() !== "enabled";
      serviceActs++;
      ev.target.disabled = true;
      try {
        if (showService(row, await api("POST", base + (enable ? "/enable" : "/disable")))) lineupChanged();
        say(name + (enable ? " enabled" : " disabled"), true);
      } catch (e) {
        say(e.message, false);
      } finally {
        ev.target.disabled = false;
      }
    });
    $(".priority-save", row).addEventListener("click", async (ev) => {
      const input = $(".priority-input", row);
      // Whole numbers as typed only: parseInt would take "1.9" or "1e3" for 1.
      const typed = input.value.trim();
      const priority = /^-?\d+$/.test(typed) ? Number(typed) : NaN;
      if (!Number.isSafeInteger(priority)) {
        say("priority must be a whole number", false);
        return;
      }
      serviceActs++;
      ev.target.disabled = true;
      try {
        if (showService(row, await api("PUT", base + "/priority", { priority }))) lineupChanged();
        say(name + ": priority " + priority, true);
      } catch (e) {
        say(e.message, false);
      } finally {
        ev.target.disabled = false;
      }
    });
  }
  $$("#services tr[data-service]").forEach(bindService);

  // What shows the lineup again once the admin token is typed (`revealAdminParts`).
  const reloaders = [];
  // With `require_account` the page came without the services, the channels and the
  // accounts (its request carried no token): once a token is typed, the page is asked
  // for again with it, those parts are put in, and the lists are loaded again.
  async function revealAdminParts() {
    const lineupNote = $("#lineup-hidden");
    const accountsNote = $("#accounts-hidden");
    if (token.value && (lineupNote || accountsNote)) {
      let doc = null;
      try {
        const res = await fetch(location.pathname, { ...OWN, headers: authHeaders(location.href) });
        if (res.ok) doc = new DOMParser().parseFromString(await res.text(), "text/html");
      } catch (_) { /* the lists below say what failed */ }
      if (doc && lineupNote && !$("#lineup-hidden", doc)) {
        const rows = $$("#services tbody tr[data-service]", doc).map((r) => document.adoptNode(r));
        $("#services tbody").replaceChildren(...rows);
        rows.forEach(bindService);
        const ours = $("#service");
        const theirs = $("#service", doc);
        if (ours && theirs) {
          ours.replaceChildren(...Array.from(theirs.children).map((o) => document.adoptNode(o)));
          ours.value = ""; // all services, as before the token
        }
        lineupNote.remove();
      }
      if (doc && accountsNote && !$("#accounts-hidden", doc)) {
        const table = $("#accounts", doc);
        if (table) accountsNote.replaceWith(document.adoptNode(table.closest("section")));
        else accountsNote.remove();
      }
    }
    for (const reload of reloaders) reload();
  }
  token.addEventListener("change", revealAdminParts);

  // Copy buttons: the clipboard API, else select() and execCommand.
  for (const button of $$("button.copy")) {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.target);
      if (!input) return;
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (_) {
        input.focus();
        input.select();
        try { document.execCommand("copy"); } catch (_) { /* selected at least */ }
      }
      say("copied " + input.value, true);
    });
  }

  // Builds an element: `el("td", {className: "name"}, "text", child...)`. Text is only
  // ever set as text: nothing from an upstream becomes markup.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(e.dataset, v);
      else if (k in e) e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }
  const cell = (cls, label, ...children) => el("td", { className: cls, dataset: { label } }, ...children);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  // "1–50" of a page, "0" when it is empty.
  const range = (offset, shown) => (shown ? fmt(offset + 1) + "–" + fmt(offset + shown) : "0");
  // Calls `fn` once typing has paused.
  function debounce(fn, ms) {
    let timer = null;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }
  // A loader whose answers only count while it is the latest: a slow answer to an
  // older search never replaces a newer one, and the older request is aborted.
  function latest(load) {
    let seq = 0;
    let ctrl = null;
    return async () => {
      const mine = ++seq;
      if (ctrl) ctrl.abort();
      ctrl = window.AbortController ? new AbortController() : null;
      await load(ctrl && ctrl.signal, () => mine === seq);
    };
  }
  // Fills a <select> with `[{name, count}]`, keeping its choice (shown with 0 when the
  // other filters leave it empty).
  function fillSelect(select, all, list) {
    const chosen = select.value;
    const options = [el("option", { value: "" }, all)];
    let seen = false;
    for (const g of list || []) {
      if (g.name === chosen) seen = true;
      options.push(el("option", { value: g.name }, g.name + " (" + fmt(g.count) + ")"));
    }
    if (chosen && !seen) options.push(el("option", { value: chosen }, chosen + " (0)"));
    select.replaceChildren(...options);
    select.value = chosen;
  }
  const PAGE = 50;

  // The test of a media file (a movie, an episode): a HEAD with `Range: bytes=0-0`,
  // as a player's first probe, and what it answered.
  async function testMedia(url, button, out) {
    button.disabled = true;
    out.className = "test-result";
    out.textContent = "testing…";
    const started = performance.now();
    try {
      const res = await fetch(url, { ...OWN, method: "HEAD", headers: { ...authHeaders(url), Range: "bytes=0-0" } });
      const ms = Math.round(performance.now() - started);
      const parts = [res.ok ? "ok" : "failed", "HTTP " + res.status, ms + " ms"];
      const type = res.headers.get("content-type");
      if (type) parts.push(type);
      const length = res.headers.get("content-range") || res.headers.get("content-length");
      if (length) parts.push(length);
      out.textContent = parts.join(" · ");
      out.className = "test-result " + (res.ok ? "ok" : "failed");
    } catch (e) {
      out.textContent = "failed: network error: " + e.message;
      out.className = "test-result failed";
    } finally {
      button.disabled = false;
    }
  }

  // Player: previews a channel, a movie or an episode in the page. Safari plays HLS
  // natively; other browsers get hls.js (vendored and served by freesky, fetched on
  // the first HLS play only), which feeds the <video> through Media Source
  // Extensions. A media file (MP4, WebM) plays in the <video> itself. What happens is
  // shown as it happens: the playlist, segments, a source switch (failover shows as a
  // discontinuity), and every error with its HTTP status and the API's own message.
  const player = $("#player");
  let play = () => {};
  if (player) {
    const video = $("#player-video");
    const title = $("#player-title");
    const status = $("#player-status");
    const log = $("#player-log");
    const LOG_LINES = 8;
    let hls = null;
    let native = null; // the URL the browser plays itself (its own HLS, or a file)
    let session = 0; // bumps on every play/close: late events of an old stream are ignored
    function show(text, kind, state) {
      status.textContent = text;
      status.className = kind || "";
      if (state) player.dataset.state = state;
    }
    function note(text) {
      const li = document.createElement("li");
      li.textContent = new Date().toLocaleTimeString() + " " + text;
      log.prepend(li);
      while (log.children.length > LOG_LINES) log.lastElementChild.remove();
    }
    function loadHlsJs() {
      if (window.Hls) return Promise.resolve(window.Hls);
      return new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = player.dataset.hlsJs;
        script.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error("hls.js did not load")));
        script.onerror = () => reject(new Error("could not load " + player.dataset.hlsJs));
        document.head.append(script);
      });
    }
    // What the URL answers when it does not play: the API's JSON error, with every
    // source tried (`detail` of a 502/504). A media file is only asked for its head.
    async function explain(url, method) {
      let res;
      try { res = await fetch(url, { ...OWN, method, headers: authHeaders(url) }); } catch (e) { return "network error: " + e.message; }
      if (res.ok) {
        const type = res.headers.get("content-type");
        return "HTTP " + res.status + (type ? " (" + type + ")" : "") +
          ", but the browser could not play it: use the link in a player";
      }
      let text = "HTTP " + res.status + " " + res.statusText;
      try {
        const body = await res.json();
        if (body && body.error) text += ": " + body.error;
        if (body && Array.isArray(body.detail)) {
          text += " (" + body.detail.map((a) => a.service + ": " + a.error).join("; ") + ")";
        }
      } catch (_) { /* not JSON, or a HEAD */ }
      return text;
    }
    function stop() {
      session += 1;
      native = null;
      if (hls) { hls.destroy(); hls = null; }
      video.pause();
      video.removeAttribute("src");
      video.load();
    }
    async function fail(url, mine, prefix, method) {
      const why = await explain(url, method || "GET");
      if (mine !== session) return;
      show((prefix ? prefix + ": " : "") + why, "error", "error");
      note("error: " + why);
    }
    // Whether `url` is HLS, from the type its head answers (a media file is not read).
    async function isHls(url) {
      try {
        const res = await fetch(url, { ...OWN, method: "HEAD", headers: { ...authHeaders(url), Range: "bytes=0-0" } });
        return /mpegurl/i.test(res.headers.get("content-type") || "");
      } catch (_) {
        return false;
      }
    }
    // `what`: {url, title, hls (true for a channel; else asked), channel or media, sources}.
    play = async (what) => {
      stop();
      const mine = session;
      const url = what.url;
      title.textContent = what.title;
      if (what.channel) player.dataset.channel = what.channel; else delete player.dataset.channel;
      if (what.media) player.dataset.media = what.media; else delete player.dataset.media;
      player.hidden = false;
      log.textContent = "";
      show("loading…", "", "loading");
      if (what.sources !== undefined) note("sources, in the order they are tried: " + (what.sources || "none"));
      player.scrollIntoView({ block: "nearest" });
      const hlsStream = what.hls || await isHls(url);
      if (mine !== session) return;
      if (!hlsStream) {
        note("a media file: the browser's own player");
        native = { url, method: "HEAD" };
        video.src = url;
      } else {
        // hls.js wherever Media Source Extensions exist (it shows each segment, a
        // failover and every error); the browser's own HLS elsewhere (older iPhones).
        let Hls = null;
        if (window.ManagedMediaSource || window.MediaSource || window.WebKitMediaSource) {
          try { Hls = await loadHlsJs(); } catch (e) { note(e.message); }
          if (mine !== session) return;
          if (Hls && !Hls.isSupported()) Hls = null;
        }
        if (!Hls) {
          if (!video.canPlayType("application/vnd.apple.mpegurl")) {
            show("this browser plays neither HLS nor Media Source Extensions: use the m3u8 link in a player", "error", "error");
            return;
          }
          note("the browser's own HLS");
          native = { url, method: "GET" };
          video.src = url;
        } else {
          note("hls.js " + Hls.version);
          // Its requests carry the admin token too: with `require_account` the admin
          // plays every channel.
          const h = new Hls({
            xhrSetup(xhr, u) {
              const auth = authHeaders(u).Authorization;
              if (auth) xhr.setRequestHeader("Authorization", auth);
            },
          });
          hls = h;
          let discontinuity = null;
          let mediaRecoveries = 0;
          h.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
            note("playlist loaded: " + d.levels.length + " variant" + (d.levels.length === 1 ? "" : "s"));
          });
          h.on(Hls.Events.FRAG_LOADED, (_, d) => {
            const bytes = (d.payload && d.payload.byteLength) || (d.frag.stats && d.frag.stats.loaded) || 0;
            player.dataset.fragments = String(Number(player.dataset.fragments || 0) + 1);
            note("segment " + d.frag.sn + " loaded (" + bytes + " bytes)");
          });
          h.on(Hls.Events.FRAG_CHANGED, (_, d) => {
            if (discontinuity !== null && d.frag.cc !== discontinuity) {
              note("discontinuity: the stream moved to another source (failover) or restarted");
            }
            discontinuity = d.frag.cc;
          });
          h.on(Hls.Events.ERROR, (_, d) => {
            const http = d.response && d.response.code ? " (HTTP " + d.response.code + (d.response.text ? " " + d.response.text : "") + ")" : "";
            const why = d.reason || (d.error && d.error.message) || "";
            note((d.fatal ? "fatal: " : "") + d.details + http + (why ? ": " + why : ""));
            if (!d.fatal) return;
            if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 1) {
              mediaRecoveries += 1;
              h.recoverMediaError();
              return;
            }
            fail(url, mine, d.details);
            h.destroy();
            if (hls === h) hls = null;
          });
          player.dataset.fragments = "0";
          h.loadSource(url);
          h.attachMedia(video);
        }
      }
      video.play().catch((e) => {
        if (mine === session && e.name === "NotAllowedError") show("press ▶ to start (the browser wants a click)", "", "paused");
      });
    };
    video.addEventListener("playing", () => show("playing", "ok", "playing"));
    video.addEventListener("waiting", () => { if (player.dataset.state === "playing") show("buffering…", "", "buffering"); });
    video.addEventListener("error", () => {
      // hls.js reports its own errors; the browser's own player only says that it failed.
      if (native) fail(native.url, session, "", native.method);
    });
    $("#player-close").addEventListener("click", () => {
      stop();
      player.hidden = true;
      delete player.dataset.channel;
      delete player.dataset.media;
      player.dataset.state = "closed";
    });
  }

  // Channels: a page at a time from /api/channels, searched and filtered on the
  // server (accents and case ignored there), so the page stays small whatever the
  // lineup's size. Rows keep the markup the server writes for a search without
  // JavaScript.
  const browser = $("#channel-browser");
  if (browser) {
    const search = $("#search");
    const group = $("#group");
    const service = $("#service");
    const tbody = $("#channels tbody");
    const count = $("#channel-count");
    const shown = $("#channel-range");
    const lineupTotal = $("#channel-total");
    const empty = $("#channel-empty");
    const prev = $("#channel-prev");
    const next = $("#channel-next");
    const base = ($("#url-tuner") && $("#url-tuner").value) || location.origin;
    let offset = 0;
    let total = 0;
    let lineupSize = null;

    function channelRow(c, live) {
      const sources = [];
      for (const s of c.sources || []) if (!sources.includes(s.service)) sources.push(s.service);
      const id = encodeURIComponent(c.id);
      return el("tr", { dataset: { channel: c.id, group: c.group || "" } },
        cell("number", "#", c.number),
        cell("name", "name", c.name),
        cell("group", "group", c.group || ""),
        cell("sources", "sources", sources.join(", ")),
        cell("now", "now", (live && live.now) || ""),
        cell("next", "next", (live && live.next) || ""),
        cell("viewers", "viewers", (live && live.viewers) || 0),
        cell("links", "links",
          el("a", { href: base + "/api/stream/" + id + ".m3u8" }, "m3u8"), " ",
          el("a", { href: base + "/api/stream/" + id + ".ts" }, "ts")),
        el("td", { className: "actions" },
          el("button", { type: "button", className: "play", "aria-label": "play " + c.name + " here" }, "play"), " ",
          el("button", { type: "button", className: "test" }, "test"), " ",
          el("output", { className: "test-result" })));
    }
    const load = latest(async (signal, current) => {
      const q = search.value.trim();
      const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
      if (q) params.set("q", q);
      if (group.value) params.set("group", group.value);
      if (service.value) params.set("service", service.value);
      const filtered = Boolean(q || group.value || service.value);
      browser.dataset.state = "loading";
      let page;
      try {
        page = await api("GET", "/api/channels?" + params, undefined, signal);
      } catch (e) {
        if (!current() || e.aborted) return;
        browser.dataset.state = "error";
        say("channels: " + e.message, false);
        return;
      }
      if (!current()) return;
      // Past the end (the lineup shrank under this page): its last page instead.
      if (!page.items.length && page.total > 0 && offset >= page.total) {
        offset = Math.floor((page.total - 1) / PAGE) * PAGE;
        load();
        return;
      }
      total = page.total;
      if (!filtered) lineupSize = page.total;
      tbody.replaceChildren(...page.items.map((c) => channelRow(c, (page.live || {})[c.id])));
      fillSelect(group, "all groups", page.groups);
      shown.textContent = range(page.offset, page.items.length);
      count.textContent = fmt(page.total);
      lineupTotal.textContent = filtered && lineupSize !== null ? "· " + fmt(lineupSize) + " in the lineup" : "";
      empty.hidden = page.total > 0;
      prev.disabled = page.offset === 0;
      next.disabled = page.offset + page.items.length >= page.total;
      browser.dataset.state = "ready";
    });
    const fromStart = () => { offset = 0; load(); };
    search.addEventListener("input", debounce(fromStart, 250));
    group.addEventListener("change", fromStart);
    service.addEventListener("change", fromStart);
    $("#channel-search").addEventListener("submit", (ev) => { ev.preventDefault(); fromStart(); });
    prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
    next.addEventListener("click", () => { if (offset + PAGE < total) { offset += PAGE; load(); } });
    reloaders.push(load);

    // Channel test: a resolve and a first-segment fetch, with timings.
    async function testChannel(row, button, out) {
      button.disabled = true;
      out.className = "test-result";
      out.textContent = "testing…";
      try {
        const r = await api("POST", "/api/channels/" + encodeURIComponent(row.dataset.channel) + "/test");
        if (r && r.ok) {
          const ms = (v) => (v === null || v === undefined ? "–" : v + " ms");
          out.textContent = "ok · " + r.service + " · resolve " + ms(r.resolve_ms) +
            " · playlist " + ms(r.playlist_ms) + " · segment " + ms(r.segment_ms) +
            " (" + (r.segment_bytes ?? 0) + " bytes)";
          out.className = "test-result ok";
        } else {
          out.textContent = "failed: " + ((r && r.error) || "unknown error");
          out.className = "test-result failed";
        }
      } catch (e) {
        out.textContent = "failed: " + e.message;
        out.className = "test-result failed";
      } finally {
        button.disabled = false;
      }
      refreshServices();
    }
    // One listener for every row, present and future.
    tbody.addEventListener("click", (ev) => {
      const button = ev.target.closest("button");
      const row = button && button.closest("tr[data-channel]");
      if (!row) return;
      if (button.classList.contains("test")) {
        testChannel(row, button, $("output.test-result", row));
      } else if (button.classList.contains("play")) {
        play({
          url: "/api/stream/" + encodeURIComponent(row.dataset.channel) + ".m3u8",
          hls: true,
          channel: row.dataset.channel,
          title: $(".name", row).textContent.trim(),
          sources: $(".sources", row).textContent.trim(),
        });
      }
    });
    load();
  }

  // Movies and series: the catalogue a page at a time (search and category on the
  // server), posters loaded lazily (only rows near the screen fetch theirs). A
  // server without a catalogue answers 404: the view says so.
  for (const section of $$("section.catalogue")) {
    const path = section.dataset.api;
    const episodes = Boolean(section.dataset.episodes);
    const status = $(".cat-status", section);
    const body = $(".cat-body", section);
    const q = $(".cat-q", section);
    const category = $(".cat-category", section);
    const tbody = $(".cat-table tbody", section);
    const prev = $(".cat-prev", section);
    const next = $(".cat-next", section);
    let offset = 0;
    let total = 0;
    status.textContent = "loading…";

    function mediaActions(url, label) {
      const out = el("output", { className: "test-result" });
      const test = el("button", { type: "button", className: "test" }, "test");
      test.addEventListener("click", () => testMedia(url, test, out));
      const playButton = el("button", { type: "button", className: "play", "aria-label": "play " + label + " here" }, "play");
      playButton.addEventListener("click", () => play({ url, title: label, media: url }));
      return [playButton, " ", test, " ", el("a", { href: url, className: "media-link" }, "link"), " ", out];
    }
    async function showEpisodes(item, row, button) {
      const open = row.nextElementSibling;
      if (open && open.classList.contains("episodes")) {
        open.remove();
        button.textContent = "episodes";
        return;
      }
      button.disabled = true;
      const td = el("td", { colSpan: 6 }, "loading…");
      const detail = el("tr", { className: "episodes", dataset: { series: String(item.id) } }, td);
      row.after(detail);
      button.textContent = "hide episodes";
      try {
        const series = await api("GET", path + "/" + encodeURIComponent(item.id));
        const seasons = (series && series.seasons) || [];
        td.replaceChildren(...(seasons.length ? [] : ["no episodes"]));
        for (const s of seasons) {
          const list = el("ol", { className: "episode-list" });
          for (const ep of s.episodes || []) {
            const url = ep.stream || "/api/episode/" + encodeURIComponent(ep.id);
            const label = item.title + " S" + s.season + "E" + ep.episode + (ep.title ? " " + ep.title : "");
            list.append(el("li", { dataset: { episode: String(ep.id) } },
              el("span", { className: "name" }, "E" + ep.episode + (ep.title ? " · " + ep.title : "")), " ",
              ...mediaActions(url, label)));
          }
          td.append(el("h3", {}, "Season " + s.season), list);
        }
      } catch (e) {
        td.textContent = "could not load the episodes: " + e.message;
      } finally {
        button.disabled = false;
      }
    }
    function itemRow(item) {
      const poster = item.poster
        ? el("img", { loading: "lazy", decoding: "async", width: 46, height: 69, referrerPolicy: "no-referrer", alt: "", src: item.poster })
        : null;
      const actions = el("td", { className: "actions" });
      const row = el("tr", { dataset: { id: String(item.id) } },
        el("td", { className: "poster" }, poster),
        cell("title", "title", item.title),
        cell("year", "year", item.year ?? ""),
        cell("category", "category", item.category || ""),
        cell("sources", "sources", (item.sources || []).join(", ")),
        actions);
      if (episodes) {
        const button = el("button", { type: "button", className: "show-episodes" }, "episodes");
        button.addEventListener("click", () => showEpisodes(item, row, button));
        actions.append(button);
      } else {
        actions.append(...mediaActions(section.dataset.media + encodeURIComponent(item.id), item.title));
      }
      return row;
    }
    const load = latest(async (signal, current) => {
      const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
      if (q.value.trim()) params.set("q", q.value.trim());
      if (category.value) params.set("category", category.value);
      section.dataset.state = "loading";
      let page;
      try {
        page = await api("GET", path + "?" + params, undefined, signal);
      } catch (e) {
        if (!current() || e.aborted) return;
        body.hidden = e.status === 404;
        status.hidden = false;
        status.textContent = e.status === 404 ? "no catalogue" : "could not load: " + e.message;
        section.dataset.state = e.status === 404 ? "none" : "error";
        return;
      }
      if (!current()) return;
      if (!(page.items || []).length && page.total > 0 && offset >= page.total) {
        offset = Math.floor((page.total - 1) / PAGE) * PAGE;
        load();
        return;
      }
      total = page.total;
      status.hidden = true;
      body.hidden = false;
      tbody.replaceChildren(...(page.items || []).map(itemRow));
      fillSelect(category, "all categories", page.categories);
      $(".cat-range", section).textContent = range(page.offset, (page.items || []).length);
      $(".cat-count", section).textContent = "of " + fmt(page.total);
      prev.disabled = page.offset === 0;
      next.disabled = page.offset + (page.items || []).length >= page.total;
      section.dataset.state = "ready";
    });
    const fromStart = () => { offset = 0; load(); };
    q.addEventListener("input", debounce(fromStart, 250));
    category.addEventListener("change", fromStart);
    $(".cat-search", section).addEventListener("submit", (ev) => { ev.preventDefault(); fromStart(); });
    prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
    next.addEventListener("click", () => { if (offset + PAGE < total) { offset += PAGE; load(); } });
    reloaders.push(load);
    load();
  }

  // Guide matches to review: channels without a guide, or matched with a low score,
  // with one-click confirm, reject, reset or pick among the alternatives (admin
  // calls, the listing too). A server without guide matching answers 404: the panel
  // stays hidden.
  const review = $("#guide-review");
  if (review) {
    const stateSelect = $("#guide-review-state");
    const tbody = $("#guide-matches tbody");
    const countOut = $("#guide-review-count");
    const prev = $("#guide-review-prev");
    const next = $("#guide-review-next");
    let offset = 0;
    let total = 0;
    const score = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(2));

    async function decide(row, body, what) {
      const out = $("output.decision", row);
      for (const b of $$("button", row)) b.disabled = true;
      try {
        const r = await api("POST", "/api/guide/matches/" + encodeURIComponent(row.dataset.channel), body);
        if (r && r.state) $(".state", row).textContent = r.state;
        if (r && "guide_id" in r) $(".guide-id", row).textContent = r.guide_id || "–";
        if (r && "score" in r) $(".score", row).textContent = score(r.score);
        out.textContent = what;
        out.className = "decision ok";
        say(row.dataset.channel + ": " + what, true);
        // A decision may take a guide channel from another row: the page is listed again.
        load();
      } catch (e) {
        out.textContent = "failed: " + e.message;
        out.className = "decision failed";
        say(e.message, false);
      } finally {
        for (const b of $$("button", row)) b.disabled = false;
      }
    }
    function matchRow(m) {
      const row = el("tr", { dataset: { channel: m.channel } });
      const button = (cls, text, body, what) => {
        const b = el("button", { type: "button", className: cls }, text);
        b.addEventListener("click", () => decide(row, body, what));
        return b;
      };
      const alternatives = el("td", { className: "alternatives", dataset: { label: "alternatives" } });
      // A channel its guide lists by id takes no decision (its guide id does): no
      // choices offered.
      for (const a of m.by_id ? [] : m.alternatives || []) {
        const label = (a.name || a.guide_id) + " (" + a.guide_id + ") " + score(a.score) + (a.source ? " · " + a.source : "");
        // The guide that lists it too: another guide may list the same id.
        const pick = { action: "pick", guide_id: a.guide_id };
        if (a.source) pick.source = a.source;
        const b = button("pick", label, pick, "picked " + a.guide_id + (a.source ? " · " + a.source : ""));
        b.dataset.guideId = a.guide_id;
        alternatives.append(b, " ");
      }
      const actions = el("td", { className: "actions" });
      if (m.by_id) {
        actions.append(el("output", { className: "decision" }, "by its guide id: change it with the channel's tvg_id"));
      } else {
        if (m.guide_id) {
          actions.append(button("confirm", "confirm", { action: "confirm" }, "confirmed"), " ",
            button("reject", "reject", { action: "reject" }, "rejected"), " ");
        }
        actions.append(button("reset", "reset", { action: "reset" }, "reset"), " ", el("output", { className: "decision" }));
      }
      row.append(
        cell("name", "channel", m.name || m.channel),
        // A decision whose guide channel its guide no longer lists gives no programmes.
        cell("state", "state", (m.state || "") + (m.gone ? " · gone" : "")),
        cell("guide-id", "guide", m.guide_id || "–"),
        cell("score", "score", score(m.score)),
        cell("reason", "why", m.reason || ""),
        alternatives,
        actions);
      return row;
    }
    const load = latest(async (signal, current) => {
      const params = new URLSearchParams({ state: stateSelect.value, offset: String(offset), limit: String(PAGE) });
      let page;
      try {
        page = await api("GET", "/api/guide/matches?" + params, undefined, signal);
      } catch (e) {
        if (!current() || e.aborted) return;
        if (e.status === 404) { review.hidden = true; return; }
        review.hidden = false;
        tbody.replaceChildren();
        countOut.textContent = e.status === 401 || e.status === 403
          ? "type the admin token above to review them (" + e.message + ")"
          : "could not load: " + e.message;
        // Right after a start the guides are still being read: asked again shortly.
        if (e.status === 503) {
          countOut.textContent += " (asking again in 10 s)";
          setTimeout(() => { if (current()) load(); }, 10000);
        }
        return;
      }
      if (!current()) return;
      total = page.total;
      review.hidden = false;
      const items = page.items || [];
      tbody.replaceChildren(...items.map(matchRow));
      countOut.textContent = range(offset, items.length) + " of " + fmt(page.total);
      prev.disabled = offset === 0;
      next.disabled = offset + items.length >= page.total;
    });
    stateSelect.addEventListener("change", () => { offset = 0; load(); });
    // Listing the matches is an admin call too: a token typed now is tried at once.
    reloaders.push(load);
    prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
    next.addEventListener("click", () => { if (offset + PAGE < total) { offset += PAGE; load(); } });
    load();
  }
})();
