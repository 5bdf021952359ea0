// What every console page shares: the log-in's token, calls to the JSON API, the language,
// money as yuan text, the page header, and server-sent events read with fetch.
// Data goes into the page as text (textContent), never as HTML.
"use strict";
(function () {
  const TOKEN = "onecard.token";
  const ME = "onecard.me";
  const LANGS = ["zh-CN", "en"];

  function token() { return sessionStorage.getItem(TOKEN); }

  function me() {
    const text = sessionStorage.getItem(ME);
    return text ? JSON.parse(text) : null;
  }

  function can(permission) {
    const m = me();
    return !!m && m.permissions.indexOf(permission) >= 0;
  }

  // -- language: the log-in's own, kept on the server (GET /auth/me's `locale`, set by
  // PUT /auth/me/preferences), so it follows the user to any browser. Before log-in, or for a
  // log-in that never chose: this browser's copy (per user name, else the last one used), else
  // the browser's language.
  function lang() {
    const m = me();
    if (m && LANGS.indexOf(m.locale) >= 0) return m.locale;
    const saved = (m && localStorage.getItem("onecard.lang." + m.username))
      || localStorage.getItem("onecard.lang");
    if (LANGS.indexOf(saved) >= 0) return saved;
    return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  }

  // The browser's copy: the log-in page's language next time, before anyone logs in.
  function remember(value, m) {
    if (m) localStorage.setItem("onecard.lang." + m.username, value);
    localStorage.setItem("onecard.lang", value);
  }

  // Logged in: saved on the server too (the page changes at once; a failed save keeps the
  // browser's copy and the page's choice, and says nothing: it is a preference).
  let saving = Promise.resolve();
  function setLang(value) {
    if (LANGS.indexOf(value) < 0) return;
    const m = me();
    remember(value, m);
    if (m && token()) {
      m.locale = value;
      sessionStorage.setItem(ME, JSON.stringify(m));
      saving = api("PUT", "/auth/me/preferences", { locale: value }).catch(() => null);
    }
    applyI18n();
    document.dispatchEvent(new CustomEvent("oc:lang"));  // pages re-render what they read
  }

  // Resolves once the last language change reached the server (for tests and log-out).
  function saved() { return saving; }

  function t(key, args) {
    const catalogue = window.OC_MESSAGES || {};
    let text = (catalogue[lang()] || {})[key];
    if (text === undefined) text = (catalogue.en || {})[key];
    if (text === undefined) text = key;
    if (args) {
      for (const name of Object.keys(args)) text = text.split("{" + name + "}").join(args[name]);
    }
    return text;
  }

  // A code the API answers (a kind, a result, a card type) in the user's words when the
  // catalogue has them, else the code itself.
  function label(prefix, code) {
    const key = prefix + "." + code;
    const text = t(key);
    return text === key ? String(code) : text;
  }

  function applyI18n(root) {
    const scope = root || document;
    document.documentElement.lang = lang();
    for (const el of scope.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n, el.dataset.i18nArgs ? JSON.parse(el.dataset.i18nArgs) : null);
    }
    for (const el of scope.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    for (const el of scope.querySelectorAll("[data-i18n-label]")) {
      el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    }
    const title = document.querySelector("title[data-i18n-title]");
    if (title) document.title = t(title.dataset.i18nTitle) + " · " + t("app.title");
    for (const select of document.querySelectorAll("select.oc-lang")) select.value = lang();
  }

  // -- money: integer fen <-> yuan text, by digits only (never through a float)
  function yuan(fen) {
    if (typeof fen !== "number" || !Number.isSafeInteger(fen)) return "";
    const sign = fen < 0 ? "-" : "";
    const abs = Math.abs(fen);
    const cents = String(abs % 100).padStart(2, "0");
    const whole = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return sign + whole + "." + cents;
  }

  // "12", "12.5", "12.50", "1,234.05" -> fen; null for anything else (three decimals, letters,
  // a sign, more than 13 digits of yuan).
  function yuanToFen(text) {
    const m = /^\s*(\d{1,3}(?:,\d{3})+|\d{1,13})(?:\.(\d{1,2}))?\s*$/.exec(String(text));
    if (!m) return null;
    const whole = m[1].split(",").join("");
    if (whole.length > 13) return null;
    const cents = (m[2] || "").padEnd(2, "0");
    return Number(whole) * 100 + Number(cents);
  }

  // -- the API
  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || ("HTTP " + status));
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    const tok = token();
    if (tok) headers["Authorization"] = "Bearer " + tok;
    const init = { method: method, headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401 && path !== "/auth/login") {
      logout(false);
      throw new ApiError(401, null);
    }
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  async function login(username, password) {
    const out = await api("POST", "/auth/login", { username: username, password: password });
    sessionStorage.setItem(TOKEN, out.access_token);
    const who = await api("GET", "/auth/me");
    sessionStorage.setItem(ME, JSON.stringify(who));
    if (LANGS.indexOf(who.locale) >= 0) remember(who.locale, who);
    return who;
  }

  // The phone pages (/m/) have their own log-in page; the console's is /console/.
  function loginPage() { return location.pathname.startsWith("/m/") ? "/m/" : "/console/"; }

  function home() {
    if (can("self")) return "/m/";
    if (can("people.read")) return "/console/people.html";
    if (can("reports.read")) return "/console/sales.html";
    if (can("documents.approve")) return "/console/approvals.html";
    if (can("merchants.read")) return "/console/merchants.html";
    if (can("access.read")) return "/console/security.html";
    return null;
  }

  async function logout(tell) {
    await saving;
    if (tell !== false && token()) {
      try { await api("POST", "/auth/logout"); } catch (e) { /* gone already */ }
    }
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(ME);
    if (!/^\/(console|m)\/?(index\.html)?$/.test(location.pathname)) location.href = loginPage();
  }

  // A page that needs a log-in: back to the log-in page without one.
  function requireLogin() {
    if (!token() || !me()) {
      location.href = loginPage();
      return false;
    }
    return true;
  }

  // -- building the page (text only)
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function message(target, key, args, kind) {
    const box = typeof target === "string" ? document.getElementById(target) : target;
    box.textContent = key ? t(key, args) : "";
    // Kept on the element, so a change of language translates the message too.
    if (key) {
      box.dataset.i18n = key;
      if (args) box.dataset.i18nArgs = JSON.stringify(args);
      else delete box.dataset.i18nArgs;
    } else {
      delete box.dataset.i18n;
      delete box.dataset.i18nArgs;
    }
    box.className = "oc-message" + (kind ? " oc-" + kind : "");
  }

  function fail(target, err) {
    if (err && err.status === 403) message(target, "error.forbidden", null, "error");
    else message(target, "error.generic", { detail: err && err.message }, "error");
  }

  function header() {
    const m = me();
    const bar = document.getElementById("oc-header");
    if (!bar) return;
    bar.textContent = "";
    const links = [];
    if (m && can("people.read")) links.push(["/console/people.html", "nav.people"]);
    if (m && can("reports.read")) links.push(["/console/sales.html", "nav.sales"]);
    // console2a: the security desk, operations and the big screen (messages-desk.js).
    if (m && can("access.read")) links.push(["/console/security.html", "nav.desk"]);
    if (m && can("reports.read")) links.push(["/console/operations.html", "nav.ops"]);
    if (m && can("reports.read")) links.push(["/console/screen.html", "nav.screen"]);
    // Card office completion, approvals, cashier, merchants (admin_api/console/static/office-*.js).
    if (m && can("documents.approve")) links.push(["/console/approvals.html", "nav.approvals"]);
    if (m && can("money.counter")) links.push(["/console/cashier.html", "nav.cashier"]);
    if (m && can("merchants.read")) links.push(["/console/merchants.html", "nav.merchants"]);
    // console3a: reports with charts and finance (reports.js, finance.js, messages-reports.js).
    if (m && can("reports.read")) links.push(["/console/reports.html", "nav.reports"]);
    if (m && can("finance.read")) links.push(["/console/finance.html", "nav.finance"]);
    const nav = el("nav", { "aria-label": "main" }, links.map(([href, key]) => {
      const here = location.pathname === href;
      return el("a", { href: href, "data-i18n": key, "aria-current": here ? "page" : null });
    }));
    const langSelect = el("select", { "class": "oc-lang", id: "oc-lang",
                                      "data-i18n-label": "lang.label" },
      [el("option", { value: "zh-CN", text: "中文" }), el("option", { value: "en", text: "English" })]);
    langSelect.addEventListener("change", () => setLang(langSelect.value));
    const right = el("div", { "class": "oc-user" }, [langSelect]);
    if (m) {
      right.append(el("span", { "class": "oc-who" }, [
        el("span", { "data-i18n": "nav.signed_in_as" }), " ",
        el("strong", { text: m.username }), " (" + m.role + ")"]));
      right.append(el("button", { type: "button", id: "oc-logout", "data-i18n": "nav.logout",
                                  onclick: () => logout(true) }));
    }
    bar.append(el("span", { "class": "oc-brand", "data-i18n": "app.title" }), nav, right);
  }

  // -- server-sent events over fetch (EventSource cannot send the Authorization header).
  // Calls onEvent(name, data) per event; reconnects when the stream ends or breaks, until
  // stop() is called or the log-in is gone. onState("live" | "reconnecting").
  function stream(path, onEvent, onState) {
    let stopped = false;
    let controller = null;
    async function once() {
      controller = new AbortController();
      const r = await fetch(path, {
        headers: { "Authorization": "Bearer " + token(), "Accept": "text/event-stream" },
        signal: controller.signal, cache: "no-store" });
      if (r.status === 401) { stopped = true; logout(false); return; }
      if (!r.ok) throw new ApiError(r.status, null);
      onState("live");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") name = val;
            else if (field === "data") data.push(val);
          }
          if (data.length) onEvent(name, JSON.parse(data.join("\n")));
        }
      }
    }
    (async function loop() {
      let wait = 500;
      while (!stopped) {
        try {
          await once();
          wait = 500;
        } catch (e) {
          if (stopped) return;
          wait = Math.min(wait * 2, 10000);
        }
        if (stopped) return;
        onState("reconnecting");
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    })();
    return { stop() { stopped = true; if (controller) controller.abort(); } };
  }

  function params() { return new URLSearchParams(location.search); }

  window.OC = {
    token, me, can, lang, setLang, saved, t, label, applyI18n, yuan, yuanToFen, api, ApiError, login, logout,
    home, loginPage, requireLogin, el, message, fail, header, stream, params,
  };

  document.addEventListener("DOMContentLoaded", () => {
    header();
    applyI18n();
  });
})();
