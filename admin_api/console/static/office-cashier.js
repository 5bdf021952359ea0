// Cashier: find a person, then a cash top-up at the counter (POST /people/{id}/topups) or a
// transfer between their wallets (POST /people/{id}/transfers). Amounts are typed in yuan and
// converted to fen by digits (OC.yuanToFen, never a float). Each filling of a form has one
// Idempotency-Key (OCX.idempotency): a double click, or a retry after a time-out, sends the
// same key, and the API moves the money once and answers every repeat with the first answer.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const find = document.getElementById("find-form");
  const results = document.getElementById("find-results");
  const counter = document.getElementById("counter");
  let person = null;

  async function balance() {
    const b = await OC.api("GET", "/people/" + person.id + "/balance");
    document.getElementById("c-main").textContent = OC.yuan(b.main_fen);
    document.getElementById("c-subsidy").textContent = OC.yuan(b.subsidy_fen);
    document.getElementById("c-total").textContent = OC.yuan(b.balance_fen);
  }

  async function choose(p) {
    person = p;
    document.getElementById("counter-name").textContent =
      [p.name, p.external_id, p.department].filter(Boolean).join(" · ");
    for (const f of [topup, transfer]) { f.form.reset(); f.key.reset(); }
    OC.message("topup-message", null);
    OC.message("transfer-message", null);
    counter.hidden = false;
    try { await balance(); } catch (err) { OC.fail("topup-message", err); }
    document.getElementById("topup-amount").focus();
  }

  find.addEventListener("submit", async (event) => {
    event.preventDefault();
    OC.message("find-message", null);
    results.textContent = "";
    try {
      const page = await OC.api("GET", "/people/search?limit=20&q=" +
                                encodeURIComponent(find.q.value.trim()));
      for (const p of page.items) {
        results.append(OC.el("li", {}, [OC.el("button", { type: "button", "class": "oc-link",
          text: [p.name, p.external_id, p.department, p.card_nos.join(", ")].filter(Boolean).join(" · "),
          onclick: () => choose(p) })]));
      }
      if (page.items.length === 0) OC.message("find-message", "people.none");
      else if (page.items.length === 1) choose(page.items[0]);
    } catch (err) { OC.fail("find-message", err); }
  });

  // One money form: its Idempotency-Key lives as long as this filling of the form.
  function moneyForm(id, path, body, doneKey) {
    const form = document.getElementById(id + "-form");
    const key = OCX.idempotency(form);
    const msg = id + "-message";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fen = OC.yuanToFen(form.querySelector("#" + id + "-amount").value);
      if (fen === null || fen < 1) { OC.message(msg, "cashier.bad_amount", null, "error"); return; }
      const personId = person.id;
      const sent = key.key();
      try {
        const out = await OCX.call("POST", "/people/" + personId + "/" + path, body(form, fen),
                                   { "Idempotency-Key": sent });
        OC.message(msg, doneKey, { amount: OC.yuan(out.data.amount_fen),
                                   balance: OC.yuan(out.data.balance_fen) }, "ok");
        form.dataset.done = sent;  // the answer shown is this key's (a repeat shows the same)
        form.reset();
        key.reset();  // the next filling is a new movement
        await balance();
      } catch (err) {
        if (err.problem && err.problem.type && err.problem.type.endsWith("/declined")) {
          key.reset();  // declined: nothing moved; the next try is a new request
          OC.message(msg, "cashier.declined", { detail: err.message }, "error");
        } else {
          OCX.refused(msg, err);  // unknown outcome: the same key again is safe
        }
      }
    });
    return { form: form, key: key };
  }

  const topup = moneyForm("topup", "topups", (f, fen) => ({
    amount_fen: fen, note: f.querySelector("#topup-note").value }), "cashier.topped_up");
  const transfer = moneyForm("transfer", "transfers", (f, fen) => ({
    from_wallet: f.querySelector("#transfer-from").value, amount_fen: fen,
    note: f.querySelector("#transfer-note").value }), "cashier.transferred");
  if (!OC.can("money.counter")) OC.message("find-message", "error.forbidden", null, "error");
});
