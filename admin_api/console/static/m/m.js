// The cardholder's and parent's phone pages (/m/): log in, then the self-service API only
// (/self/...): balance, recent transactions, cards; a cardholder also gets the QR code to pay
// with (fetched again before it expires), reports their own card lost, and binds or unbinds
// their bank card (only its masked number is ever shown). A parent sees their own children,
// chosen from the list the API gives, and nothing else.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("m-login");
  const app = document.getElementById("m-app");
  const lang = document.getElementById("m-lang");
  const logoutButton = document.getElementById("m-logout");
  const TXNS_SHOWN = 20;
  let people = [];
  let person = null;
  let qrTimer = null;
  let view = null;  // what was read, to render again on a change of language

  lang.addEventListener("change", () => OC.setLang(lang.value));
  logoutButton.addEventListener("click", async () => {
    stopQr();
    await OC.logout(true);
    location.reload();
  });

  function isCardholder() { return OC.me() && OC.me().role === "cardholder"; }

  function showLogin() {
    app.hidden = true;
    logoutButton.hidden = true;
    login.hidden = false;
    OC.applyI18n();
  }

  login.addEventListener("submit", async (event) => {
    event.preventDefault();
    OC.message("m-login-message", null);
    const button = document.getElementById("m-login-submit");
    button.disabled = true;
    try {
      await OC.login(login.username.value.trim(), login.password.value);
      if (!OC.can("self")) {
        await OC.logout(true);
        OC.message("m-login-message", "m.staff", null, "error");
        return;
      }
      start();
    } catch (err) {
      if (err.status === 401 || err.status === 400) OC.message("m-login-message", "login.failed", null, "error");
      else if (err.status === 429) OC.message("m-login-message", "login.limited", null, "error");
      else OC.fail("m-login-message", err);
    } finally {
      button.disabled = false;
    }
  });

  // -- the QR code: a fresh one before the last expires
  function stopQr() { if (qrTimer) { clearTimeout(qrTimer); qrTimer = null; } }

  async function loadQr() {
    stopQr();
    const img = document.getElementById("m-qr");
    const note = document.getElementById("m-qr-note");
    const forId = person.id;
    try {
      const code = await OC.api("GET", "/self/people/" + forId + "/qr/svg");
      if (!person || person.id !== forId) return;
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(code.svg);
      img.alt = OC.t("m.qr_alt", { card: code.card_no });
      img.dataset.card = code.card_no;
      img.dataset.expires = code.expires_at;
      img.hidden = false;
      OC.message(note, "m.qr_until", { time: new Date(code.expires_at).toLocaleTimeString(OC.lang(), { hour12: false }) });
      // Fetched again 10 s before it expires (at least 5 s on), so the one shown always pays.
      qrTimer = setTimeout(loadQr, Math.max(5, code.expires_in - 10) * 1000);
    } catch (err) {
      img.hidden = true;
      img.removeAttribute("src");
      if (err.status === 409) OC.message(note, "m.qr_none", { detail: err.message }, "error");
      else OC.fail(note, err);
    }
  }

  // -- the bank card (the cardholder's own)
  async function loadBank() {
    const shown = document.getElementById("m-bank");
    const unbind = document.getElementById("m-bank-unbind");
    const form = document.getElementById("m-bank-form");
    try {
      const card = await OC.api("GET", "/self/people/" + person.id + "/bank-card");
      OC.message(shown, "office.bank_bound", { pan: card.pan_masked });
      unbind.hidden = false;
      form.hidden = true;
    } catch (err) {
      if (err.status !== 404) { OC.fail(shown, err); return; }
      OC.message(shown, "office.bank_none");
      unbind.hidden = true;
      form.hidden = false;
    }
  }

  document.getElementById("m-bank-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const out = await OC.api("POST", "/self/people/" + person.id + "/bank-card", {
        pan: form.querySelector("#m-pan").value.replace(/\s+/g, ""),
        bank_token: form.querySelector("#m-bank-token").value.trim() });
      form.reset();  // the full number leaves the page at once
      await loadBank();
      OC.message("m-bank-message", "office.bound", { pan: out.pan_masked }, "ok");
    } catch (err) { OCX.refused("m-bank-message", err); }
  });

  document.getElementById("m-bank-unbind").addEventListener("click", async () => {
    if (!window.confirm(OC.t("office.confirm_unbind"))) return;
    try {
      await OC.api("DELETE", "/self/people/" + person.id + "/bank-card");
      await loadBank();
      OC.message("m-bank-message", "office.unbound", null, "ok");
    } catch (err) { OCX.refused("m-bank-message", err); }
  });

  document.getElementById("m-qr-refresh").addEventListener("click", () => loadQr());

  async function reportLost(card) {
    if (!window.confirm(OC.t("card.confirm_loss", { card: card.card_no }))) return;
    try {
      await OC.api("POST", "/self/cards/" + card.card_no + "/report-loss");
      await show(person);
      OC.message("m-message", "card.done_loss", { card: card.card_no }, "ok");
    } catch (err) { OCX.refused("m-message", err); }
  }

  // The last TXNS_SHOWN transactions: the statement is oldest first, paged by lsn.
  async function recent() {
    let after = 0;
    let items = [];
    for (let page = 0; page < 20; page++) {
      const s = await OC.api("GET", "/self/people/" + person.id + "/transactions?limit=1000&after_lsn=" + after);
      items = items.concat(s.items).slice(-TXNS_SHOWN);
      if (s.next_after_lsn === null) break;
      after = s.next_after_lsn;
    }
    return items.reverse();
  }

  function render() {
    if (!view) return;
    const { balance, cards, txns } = view;
    document.getElementById("m-name").textContent = person.name;
    document.getElementById("m-total").textContent = OC.yuan(balance.balance_fen);
    document.getElementById("m-main").textContent = OC.yuan(balance.main_fen);
    document.getElementById("m-subsidy").textContent = OC.yuan(balance.subsidy_fen);
    const status = document.getElementById("m-status");
    status.textContent = "";
    status.append(OC.el("span", { "data-i18n": "col.status" }), ": ",
                  OC.el("span", { "class": "oc-status-" + balance.account_status,
                                  "data-i18n": "status." + balance.account_status }));
    const list = document.getElementById("m-cards");
    list.textContent = "";
    for (const c of cards) {
      const item = OC.el("li", { "data-card": c.card_no }, [
        OC.el("span", { text: String(c.card_no) + " · " }),
        OC.el("span", { "class": "card-status oc-status-" + c.status, "data-i18n": "status." + c.status })]);
      if (isCardholder() && c.status === "active") {
        item.append(" ", OCX.button("card.report_loss", { "class": "oc-danger", "data-card": c.card_no,
                                                          onclick: () => reportLost(c) }));
      }
      list.append(item);
    }
    const ul = document.getElementById("m-txns");
    ul.textContent = "";
    for (const e of txns) {
      ul.append(OC.el("li", {}, [
        OC.el("span", { text: OCX.time(e.at) + " · " + OC.label("kind", e.kind)
                        + (e.merchant ? " · " + e.merchant : "")
                        + (e.result !== "APPROVED" ? " · " + OC.label("result", e.result) : "") }),
        OC.el("span", { "class": "m-amount", text: OC.yuan(e.main_delta_fen + e.subsidy_delta_fen) })]));
    }
    if (txns.length === 0) ul.append(OC.el("li", { "data-i18n": "person.no_txns" }));
    OC.applyI18n(app);
  }

  async function show(p) {
    person = p;
    stopQr();
    OC.message("m-message", null);
    const [balance, cards, txns] = await Promise.all([
      OC.api("GET", "/self/people/" + p.id + "/balance"),
      OC.api("GET", "/self/people/" + p.id + "/cards"),
      recent()]);
    view = { balance: balance, cards: cards, txns: txns };
    render();
    const mine = isCardholder();
    document.getElementById("m-qr-section").hidden = !mine;
    document.getElementById("m-bank-section").hidden = !mine;
    if (mine) { loadQr(); loadBank(); }
  }

  async function start() {
    login.hidden = true;
    app.hidden = false;
    logoutButton.hidden = false;
    OC.applyI18n();
    try {
      people = await OC.api("GET", "/self/people");
    } catch (err) { OC.fail("m-message", err); return; }
    const box = document.getElementById("m-children-box");
    const choose = document.getElementById("m-child");
    choose.textContent = "";
    for (const p of people) choose.append(OC.el("option", { value: p.id, text: p.name }));
    box.hidden = OC.me().role !== "parent";
    choose.onchange = () => {
      const p = people.find((x) => x.id === Number(choose.value));
      if (p) show(p).catch((err) => OC.fail("m-message", err));
    };
    if (people.length === 0) { OC.message("m-message", "m.nobody"); return; }
    await show(people[0]).catch((err) => OC.fail("m-message", err));
  }

  document.addEventListener("oc:lang", render);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && person && isCardholder()) loadQr();
  });
  if (OC.token() && OC.me() && OC.can("self")) start();
  else showLogin();
});
