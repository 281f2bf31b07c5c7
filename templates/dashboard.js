// freesky dashboard: the page is complete without this script; it adds the admin
// controls, filtering as you type, copy buttons, the channel test and the player. Everything
// shown comes from upstreams: it is inserted with textContent only, never as HTML.
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

  // Calls the JSON API; resolves to the parsed body, or throws the API's `error` text.
  async function api(method, path, body) {
    const headers = {};
    if (token.value) headers["Authorization"] = "Bearer " + token.value;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new Error("network error: " + e.message);
    }
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      throw new Error((data && data.error) || ("HTTP " + res.status));
    }
    return data;
  }

  // Services: enable/disable and priority.
  // `keepPriority`: a periodic refresh leaves the priority box to the user.
  function showService(row, status, keepPriority) {
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
    if ("last_error" in status) $(".last-error", row).textContent = status.last_error || "";
    if ("channel_count" in status) $(".channels", row).textContent = String(status.channel_count);
  }
  // Every service row from /api/services/status: after a channel test, and every
  // few seconds while the page is visible (changes made elsewhere show up).
  async function refreshServices() {
    let all;
    try { all = await api("GET", "/api/services/status"); } catch (_) { return; }
    for (const status of all || []) {
      const row = $$("#services tr[data-service]").find((r) => r.dataset.service === status.name);
      if (row) showService(row, status, true);
    }
  }
  setInterval(() => { if (!document.hidden) refreshServices(); }, 3000);
  for (const row of $$("#services tr[data-service]")) {
    const name = row.dataset.service;
    const base = "/api/services/" + encodeURIComponent(name);
    $(".toggle", row).addEventListener("click", async (ev) => {
      const enable = $(".state", row).textContent.trim() !== "enabled";
      ev.target.disabled = true;
      try {
        showService(row, await api("POST", base + (enable ? "/enable" : "/disable")));
        say(name + (enable ? " enabled" : " disabled"), true);
      } catch (e) {
        say(e.message, false);
      } finally {
        ev.target.disabled = false;
      }
    });
    $(".priority-save", row).addEventListener("click", async (ev) => {
      const input = $(".priority-input", row);
      const priority = Number.parseInt(input.value, 10);
      if (!Number.isInteger(priority)) {
        say("priority must be a whole number", false);
        return;
      }
      ev.target.disabled = true;
      try {
        showService(row, await api("PUT", base + "/priority", { priority }));
        say(name + ": priority " + priority, true);
      } catch (e) {
        say(e.message, false);
      } finally {
        ev.target.disabled = false;
      }
    });
  }

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

  // Channels: filter as you type (name and group, accents and case ignored).
  const fold = (s) => (s || "").normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  const search = $("#search");
  const group = $("#group");
  const count = $("#channel-count");
  const rows = $$("#channels tr[data-channel]");
  function filter() {
    const q = fold(search.value).trim();
    const g = group.value;
    let shown = 0;
    for (const row of rows) {
      const text = fold($(".name", row).textContent) + "\n" + fold($(".group", row).textContent);
      const match = (!q || text.includes(q)) && (!g || row.dataset.group === g);
      row.hidden = !match;
      if (match) shown += 1;
    }
    count.textContent = String(shown);
  }
  if (search && group) {
    search.addEventListener("input", filter);
    group.addEventListener("change", filter);
  }

  // Channel test: a resolve and a first-segment fetch, with timings.
  for (const row of rows) {
    const button = $("button.test", row);
    const out = $("output.test-result", row);
    button.addEventListener("click", async () => {
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
    });
  }

  // Player: previews a channel in the page. Safari plays HLS natively; other browsers
  // get hls.js (vendored and served by freesky, fetched on the first play only), which
  // feeds the <video> through Media Source Extensions. What happens is shown as it
  // happens: the playlist, segments, a source switch (failover shows as a
  // discontinuity), and every error with its HTTP status and the API's own message.
  const player = $("#player");
  if (player) {
    const video = $("#player-video");
    const title = $("#player-title");
    const status = $("#player-status");
    const log = $("#player-log");
    const LOG_LINES = 8;
    let hls = null;
    let native = false; // the browser's own HLS is playing (no hls.js)
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
    // What the stream URL answers when it does not play: the API's JSON error, with
    // every source tried (`detail` of a 502/504).
    async function explain(url) {
      let res;
      try { res = await fetch(url); } catch (e) { return "network error: " + e.message; }
      if (res.ok) return "HTTP " + res.status + ", but the browser could not play it";
      let text = "HTTP " + res.status + " " + res.statusText;
      try {
        const body = await res.json();
        if (body && body.error) text += ": " + body.error;
        if (body && Array.isArray(body.detail)) {
          text += " (" + body.detail.map((a) => a.service + ": " + a.error).join("; ") + ")";
        }
      } catch (_) { /* not JSON */ }
      return text;
    }
    function stop() {
      session += 1;
      native = false;
      if (hls) { hls.destroy(); hls = null; }
      video.pause();
      video.removeAttribute("src");
      video.load();
    }
    async function fail(url, mine, prefix) {
      const why = await explain(url);
      if (mine !== session) return;
      show((prefix ? prefix + ": " : "") + why, "error", "error");
      note("error: " + why);
    }
    async function play(row) {
      stop();
      const mine = session;
      const id = row.dataset.channel;
      const url = "/api/stream/" + encodeURIComponent(id) + ".m3u8";
      title.textContent = $(".name", row).textContent.trim();
      player.dataset.channel = id;
      player.hidden = false;
      log.textContent = "";
      const sources = $(".sources", row).textContent.trim();
      show("loading…", "", "loading");
      note("sources, in the order they are tried: " + (sources || "none"));
      player.scrollIntoView({ block: "nearest" });
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
        native = true;
        video.src = url;
      } else {
        note("hls.js " + Hls.version);
        const h = new Hls();
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
      video.play().catch((e) => {
        if (mine === session && e.name === "NotAllowedError") show("press ▶ to start (the browser wants a click)", "", "paused");
      });
    }
    video.addEventListener("playing", () => show("playing", "ok", "playing"));
    video.addEventListener("waiting", () => { if (player.dataset.state === "playing") show("buffering…", "", "buffering"); });
    video.addEventListener("error", () => {
      // hls.js reports its own errors; the browser's own HLS only says that it failed.
      if (native) fail("/api/stream/" + encodeURIComponent(player.dataset.channel) + ".m3u8", session, "");
    });
    $("#player-close").addEventListener("click", () => {
      stop();
      player.hidden = true;
      delete player.dataset.channel;
      player.dataset.state = "closed";
    });
    for (const row of rows) {
      const button = $("button.play", row);
      if (button) button.addEventListener("click", () => play(row));
    }
  }
})();
