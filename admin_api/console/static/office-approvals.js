// Approvals: the documents waiting for this log-in's decision at their next level
// (GET /approvals/inbox), each with its figures and lines (GET /documents/{id}); approve or
// reject with a note; the document as a PDF to print (GET /documents/{id}/pdf).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const table = document.getElementById("inbox-table");
  const section = document.getElementById("doc-section");
  let inbox = [];
  let open = null;  // { item, doc }

  function renderInbox() {
    const body = table.querySelector("tbody");
    body.textContent = "";
    for (const item of inbox) {
      const d = item.document;
      body.append(OC.el("tr", { "data-doc": d.id }, [
        OC.el("td", { "class": "num" }, [OC.el("a", { href: "#doc-" + d.id, text: String(d.id),
                                                      "aria-label": OC.t("approvals.open", { doc: d.id }),
                                                      onclick: (e) => { e.preventDefault(); show(item); } })]),
        OCX.cell(OC.label("doc_type", d.doc_type)),
        OCX.cell(d.title),
        OCX.cell(OC.yuan(d.total_fen), true),
        OCX.cell(String(d.lines_count), true),
        OCX.cell(OC.t("approvals.level_of", { level: item.level, levels: d.levels })),
        OCX.cell(d.created_by),
        OCX.cell(OCX.time(d.created_at)),
      ]));
    }
    table.hidden = inbox.length === 0;
    if (inbox.length === 0) OC.message("inbox-message", "approvals.empty");
    else OC.message("inbox-message", "approvals.waiting", { n: inbox.length });
  }

  async function load() {
    try {
      inbox = await OC.api("GET", "/approvals/inbox");
      renderInbox();
    } catch (err) {
      table.hidden = true;
      OC.fail("inbox-message", err);
    }
  }

  function renderDoc() {
    const { item, doc } = open;
    const heading = document.getElementById("doc-heading");
    heading.textContent = OC.t("approvals.doc_heading", { doc: doc.id, title: doc.title });
    document.getElementById("doc-facts").textContent = [
      OC.label("doc_type", doc.doc_type),
      OC.t("approvals.total") + " " + OC.yuan(doc.total_fen),
      OC.t("approvals.level_of", { level: item.level, levels: doc.levels }),
      OC.t("approvals.version", { version: doc.version }),
      OC.t("approvals.by") + " " + doc.created_by].join(" · ");
    document.getElementById("doc-reason").textContent = doc.reason;
    const body = document.querySelector("#doc-lines tbody");
    body.textContent = "";
    for (const l of doc.lines) {
      body.append(OC.el("tr", {}, [OCX.cell(String(l.line_no), true),
        OCX.cell(l.person_name + " (#" + l.person_id + ")"), OCX.cell(OC.label("wallet", l.wallet)),
        OCX.cell(OC.yuan(l.amount_fen), true), OCX.cell(l.note)]));
    }
    const steps = document.getElementById("doc-steps");
    steps.textContent = "";
    for (const s of doc.steps) {
      steps.append(OC.el("li", { text: [OCX.time(s.at), "v" + s.version,
        OC.t("approvals.level_n", { level: s.level }), OC.label("decision", s.decision),
        s.username, s.comment].filter(Boolean).join(" · ") }));
    }
    document.getElementById("approve").hidden = !item.can_approve;
    if (!item.can_approve) {
      OC.message("decide-message", "approvals.why." + item.why_not, null, "error");
    }
    section.hidden = false;
  }

  async function show(item) {
    OC.message("decide-message", null);
    try {
      const doc = await OC.api("GET", "/documents/" + item.document.id);
      open = { item: item, doc: doc };
      renderDoc();
      document.getElementById("decide-note").focus();
    } catch (err) { OC.fail("decide-message", err); }
  }

  async function decide(step) {
    const { doc } = open;
    const key = step === "approve" ? "approvals.confirm_approve" : "approvals.confirm_reject";
    if (!window.confirm(OC.t(key, { doc: doc.id }))) return;
    const buttons = section.querySelectorAll("button");
    for (const b of buttons) b.disabled = true;
    try {
      const out = await OC.api("POST", "/documents/" + doc.id + "/" + step,
                               { comment: document.getElementById("decide-note").value });
      document.getElementById("decide-note").value = "";
      section.hidden = true;
      await load();
      OC.message("inbox-message", "approvals.done", { doc: out.id, status: OC.label("doc_status", out.status) },
                 out.status === "failed" ? "error" : "ok");
    } catch (err) {
      OCX.refused("decide-message", err);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  document.getElementById("approve").addEventListener("click", () => decide("approve"));
  document.getElementById("reject").addEventListener("click", () => decide("reject"));
  document.getElementById("pdf").addEventListener("click", async () => {
    try { await OCX.download("/documents/" + open.doc.id + "/pdf", "document-" + open.doc.id + ".pdf"); }
    catch (err) { OC.fail("decide-message", err); }
  });
  document.addEventListener("oc:lang", () => { renderInbox(); if (open && !section.hidden) renderDoc(); });
  // approvals.html?doc=N (the person page's link): open that document if it is in the inbox.
  const wanted = Number(OC.params().get("doc"));
  load().then(() => {
    const item = inbox.find((i) => i.document.id === wanted);
    if (item) show(item);
  });
});
