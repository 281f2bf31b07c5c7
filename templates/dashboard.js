// freesky dashboard: the page is complete without this script; it adds the admin
// controls, filtering as you type, copy buttons and the channel test. Everything
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
})();
