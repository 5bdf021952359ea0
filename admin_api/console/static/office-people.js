// Card office, the people list (with people.js): a check box per person found, and the bulk
// actions the API has for a selection, all of them or none: report lost and unfreeze
// (cards.write), move to a node of their tenant and set the identity class (people.write);
// a link to the people import.
"use strict";
(function () {
  let people = [];

  function selected() {
    return [...document.querySelectorAll("#people-table tbody input.oc-pick:checked")]
      .map((box) => Number(box.value));
  }

  function refresh() {
    const n = selected().length;
    const count = document.getElementById("bulk-count");
    if (!count) return;
    OC.message(count, "office.selected", { n: n });
    for (const b of document.querySelectorAll("#office-bulk button")) b.disabled = n === 0;
  }

  const CONFIRM = { "report-loss": "office.confirm_bulk_loss",
                    "unfreeze": "office.confirm_bulk_unfreeze", "move": "office.confirm_bulk_move",
                    "class": "office.confirm_bulk_class" };

  function writer() { return OC.can("cards.write") || OC.can("people.write"); }

  async function bulk(action) {
    const ids = selected();
    const msg = document.getElementById("bulk-message");
    const body = { person_ids: ids };
    const args = { n: ids.length };
    if (action === "move") {
      const to = document.getElementById("bulk-node");
      body.node_id = Number(to.value);
      args.to = to.selectedOptions[0].textContent.trim();
    }
    if (action === "class") {
      const to = document.getElementById("bulk-class");
      body.class_id = Number(to.value);
      args.to = to.selectedOptions[0].textContent;
    }
    if (!window.confirm(OC.t(CONFIRM[action], args))) return;
    OC.message(msg, null);
    try {
      const out = await OC.api("POST", "/people/bulk/" + action, body);
      const q = document.getElementById("q").value.trim();
      await OC_PEOPLE.search(q);
      OC.message(msg, "office.bulk_done", { changed: out.changed.length,
                                            unchanged: out.unchanged.length }, "ok");
    } catch (err) {
      const detail = err.problem && err.problem.errors
        ? err.problem.errors.map((e) => e.field + ": " + e.message).join("; ") : err.message;
      if (err.status === 403) OC.message(msg, "error.forbidden", null, "error");
      else OC.message(msg, "office.refused", { detail: detail }, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!OC.token()) return;
    const links = document.getElementById("office-links");
    if (OC.can("people.write")) {
      links.append(OC.el("a", { href: "/console/import.html", id: "import-link",
                                "data-i18n": "office.import_link" }));
    }
    if (!writer()) return;
    const box = document.getElementById("office-bulk");
    box.append(OC.el("p", { id: "bulk-count", "class": "oc-message", role: "status" }));
    if (OC.can("cards.write")) {
      box.append(
        OCX.button("office.bulk_loss", { id: "bulk-loss", "class": "oc-danger",
                                         onclick: () => bulk("report-loss") }), " ",
        OCX.button("office.bulk_unfreeze", { id: "bulk-unfreeze", onclick: () => bulk("unfreeze") }));
    }
    if (OC.can("people.write") && OC.can("org.read")) {
      const nodes = OC.el("select", { id: "bulk-node" });
      const classes = OC.el("select", { id: "bulk-class" });
      box.append(OC.el("div", { "class": "oc-inline" }, [
        OCX.field("bulk-node", "office.move_to", nodes),
        OCX.button("office.bulk_move", { id: "bulk-move", onclick: () => bulk("move") }),
        OCX.field("bulk-class", "office.class_to", classes),
        OCX.button("office.bulk_class", { id: "bulk-set-class", onclick: () => bulk("class") })]));
      // People stay in their tenant: the tenants and departments of the log-in's subtree.
      OC.api("GET", "/org/nodes").then((all) => {
        const top = all.length ? all[0].depth : 0;
        for (const n of all.filter((x) => x.tenant_id !== null)) {
          nodes.append(OC.el("option", { value: n.id,
                                         text: "\u00a0".repeat(2 * (n.depth - top)) + n.name }));
        }
      }).catch((err) => OC.fail("bulk-message", err));
      OC.api("GET", "/classes").then((all) => {
        for (const c of all) classes.append(OC.el("option", { value: c.id, text: c.name }));
      }).catch((err) => OC.fail("bulk-message", err));
    }
    box.append(OC.el("p", { id: "bulk-message", "class": "oc-message", role: "status" }));
    box.hidden = true;
    OC.applyI18n(links);
    OC.applyI18n(box);
  });

  document.addEventListener("oc:people", (event) => {
    people = event.detail;
    if (!writer()) return;
    const table = document.getElementById("people-table");
    const headRow = table.querySelector("thead tr");
    if (!headRow.querySelector(".oc-pick-all")) {
      const all = OC.el("input", { type: "checkbox", "class": "oc-pick-all", id: "pick-all",
                                   "data-i18n-label": "office.pick_all" });
      all.addEventListener("change", () => {
        for (const b of table.querySelectorAll("tbody input.oc-pick")) b.checked = all.checked;
        refresh();
      });
      headRow.prepend(OC.el("th", { scope: "col" }, [all]));
    }
    table.querySelector("#pick-all").checked = false;
    const rows = table.querySelectorAll("tbody tr");
    people.forEach((p, i) => {
      const box = OC.el("input", { type: "checkbox", "class": "oc-pick", value: p.id,
                                   "aria-label": OC.t("office.pick", { name: p.name }) });
      box.addEventListener("change", refresh);
      rows[i].prepend(OC.el("td", {}, [box]));
    });
    OC.applyI18n(table.querySelector("thead"));
    document.getElementById("office-bulk").hidden = people.length === 0;
    refresh();
  });
})();
