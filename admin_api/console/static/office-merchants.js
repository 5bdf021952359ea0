// Merchants and terminals: the merchants of the log-in's subtree (GET /merchants), a
// merchant's terminals (GET /merchants/{id}/terminals); with merchants.write: register a
// terminal, disable or enable it, re-key it. A new key is shown once, in this page only,
// until "I have loaded it" (the API never shows it again). Each terminal's state as the
// switch last wrote it (online / offline since a time; a dot and the words, never colour
// alone), and a filter online / offline (?online=); the address of its last session only for
// log-ins that manage terminals (the API gives it to them alone).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const writer = OC.can("merchants.write");
  const mTable = document.getElementById("merchants-table");
  const tSection = document.getElementById("terminals-section");
  let merchants = [];
  let merchant = null;
  let terminals = [];

  function showKey(out) {
    document.getElementById("key-terminal").textContent =
      OC.t("merchants.key_for", { terminal: out.terminal.id, version: out.terminal.key_version });
    document.getElementById("key-hex").textContent = out.key_hex;
    document.getElementById("key-box").hidden = false;
    document.getElementById("key-done").focus();
  }

  document.getElementById("key-done").addEventListener("click", () => {
    document.getElementById("key-hex").textContent = "";  // gone from the page for good
    document.getElementById("key-box").hidden = true;
  });

  async function act(t, action) {
    const confirmKey = { disable: "merchants.confirm_disable", enable: "merchants.confirm_enable",
                         rekey: "merchants.confirm_rekey" }[action];
    if (!window.confirm(OC.t(confirmKey, { terminal: t.id }))) return;
    try {
      const out = await OC.api("POST", "/terminals/" + t.id + "/" + action);
      await loadTerminals();
      if (action === "rekey") showKey(out);
      OC.message("terminal-message", "merchants.done_" + action, { terminal: t.id }, "ok");
    } catch (err) { OCX.refused("terminal-message", err); }
  }

  function renderMerchants() {
    const body = mTable.querySelector("tbody");
    body.textContent = "";
    for (const m of merchants) {
      body.append(OC.el("tr", { "data-merchant": m.id, "aria-current": merchant && merchant.id === m.id ? "true" : null }, [
        OCX.cell(String(m.id), true),
        OC.el("td", {}, [OC.el("a", { href: "#merchant-" + m.id, text: m.name,
                                      onclick: (e) => { e.preventDefault(); open(m); } })]),
        OCX.cell(OC.label("merchant_kind", m.kind)), OCX.cell(OC.label("mode", m.mode)),
        OCX.cell(m.mode === "fixed" ? OC.yuan(m.fixed_amount_fen) : "", true),
        OCX.cell(OC.label("cycle", m.settlement_cycle))]));
    }
    mTable.hidden = merchants.length === 0;
    if (merchants.length === 0) OC.message("merchants-message", "merchants.none");
  }

  function when(iso) {
    const at = new Date(iso);
    const time = at.toLocaleTimeString(OC.lang(), { hour: "2-digit", minute: "2-digit", hour12: false });
    if (at.toDateString() === new Date().toDateString()) return time;
    return at.toLocaleDateString(OC.lang()) + " " + time;
  }

  function presence(t) {
    const state = !t.online_since ? "never" : t.online ? "online" : "offline";
    const text = state === "never" ? OC.t("merchants.never_online")
      : OC.t("merchants." + state + "_since", { time: when(t.online_since) });
    const cell = OC.el("td", { "class": "terminal-presence", "data-online": String(!!t.online) }, [
      OC.el("span", { "class": "oc-dot oc-dot-" + state, "aria-hidden": "true" }), " ",
      OC.el("span", { text })]);
    if (t.peer) cell.append(" ", OC.el("span", { "class": "oc-peer", text: OC.t("merchants.peer", { peer: t.peer }) }));
    return cell;
  }

  function renderTerminals() {
    if (!merchant) return;
    document.getElementById("terminals-heading").textContent =
      OC.t("merchants.terminals_of", { name: merchant.name });
    const body = document.querySelector("#terminals-table tbody");
    body.textContent = "";
    for (const t of terminals) {
      const actions = OC.el("td");
      if (writer && t.kind !== "admin") {
        if (t.status === "enabled") {
          actions.append(OCX.button("merchants.disable", { "class": "oc-danger", "data-terminal": t.id,
                                                           onclick: () => act(t, "disable") }), " ");
        } else {
          actions.append(OCX.button("merchants.enable", { "data-terminal": t.id,
                                                          onclick: () => act(t, "enable") }), " ");
        }
        actions.append(OCX.button("merchants.rekey", { "data-terminal": t.id,
                                                       onclick: () => act(t, "rekey") }));
      }
      body.append(OC.el("tr", { "data-terminal": t.id }, [
        OCX.cell(String(t.id), true), OCX.cell(t.name), OCX.cell(OC.label("terminal_kind", t.kind)),
        OCX.cell(String(t.key_version), true),
        OC.el("td", { "class": "terminal-status oc-status-" + (t.status === "enabled" ? "active" : "lost"),
                      "data-i18n": "terminal_status." + t.status }), presence(t), actions]));
    }
    if (terminals.length === 0) {
      body.append(OC.el("tr", {}, [OC.el("td", { colspan: 7, "data-i18n": "merchants.no_terminals" })]));
    }
    OC.applyI18n(body);
    document.getElementById("register-form").hidden = !writer || merchant.kind === "system";
    tSection.hidden = false;
  }

  async function loadTerminals() {
    const online = document.getElementById("terminal-filter").value;
    const page = await OC.api("GET", "/merchants/" + merchant.id + "/terminals?limit=1000" +
                              (online ? "&online=" + online : ""));
    terminals = page.items;
    renderTerminals();
  }

  async function open(m) {
    merchant = m;
    OC.message("terminal-message", null);
    renderMerchants();
    try { await loadTerminals(); } catch (err) { OC.fail("terminal-message", err); }
  }

  document.getElementById("terminal-filter").addEventListener("change", async () => {
    if (!merchant) return;
    try { await loadTerminals(); } catch (err) { OC.fail("terminal-message", err); }
  });

  document.getElementById("register-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const out = await OC.api("POST", "/merchants/" + merchant.id + "/terminals", {
        kind: form.querySelector("#register-kind").value,
        name: form.querySelector("#register-name").value.trim() });
      form.reset();
      await loadTerminals();
      showKey(out);
      OC.message("terminal-message", "merchants.registered", { terminal: out.terminal.id }, "ok");
    } catch (err) { OCX.refused("terminal-message", err); }
  });

  async function load() {
    try {
      const page = await OC.api("GET", "/merchants?limit=1000");
      merchants = page.items;
      renderMerchants();
      const want = /^#merchant-(\d+)$/.exec(location.hash);
      const m = want && merchants.find((x) => x.id === Number(want[1]));
      if (m) open(m);
    } catch (err) {
      mTable.hidden = true;
      OC.fail("merchants-message", err);
    }
  }
  document.addEventListener("oc:lang", () => { renderMerchants(); renderTerminals(); });
  load();
});
