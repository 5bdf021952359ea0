// Card office: find people by name, card number, external id or department (GET /people/search).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const form = document.getElementById("search-form");
  const table = document.getElementById("people-table");
  const body = table.querySelector("tbody");

  function status(value) {
    return OC.el("span", { "class": "oc-status-" + value, "data-i18n": "status." + value });
  }

  window.OC_PEOPLE = { search: (q) => search(q) };

  async function search(q) {
    OC.message("people-message", null);
    try {
      const page = await OC.api("GET", "/people/search?q=" + encodeURIComponent(q));
      body.textContent = "";
      for (const p of page.items) {
        body.append(OC.el("tr", {}, [
          OC.el("td", {}, [OC.el("a", { href: "/console/person.html?id=" + p.id, text: p.name })]),
          OC.el("td", { text: p.external_id || "" }),
          OC.el("td", { text: p.department }),
          OC.el("td", { text: p.card_nos.join(", ") }),
          OC.el("td", {}, [status(p.account_status)]),
        ]));
      }
      table.hidden = page.items.length === 0;
      if (page.items.length === 0) OC.message("people-message", "people.none");
      else if (page.more) OC.message("people-message", "people.more");
      OC.applyI18n(body);
      // Bulk actions on a selection (office-people.js) follow the rows shown.
      document.dispatchEvent(new CustomEvent("oc:people", { detail: page.items }));
    } catch (err) {
      table.hidden = true;
      OC.fail("people-message", err);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = form.q.value.trim();
    history.replaceState(null, "", q ? "?q=" + encodeURIComponent(q) : location.pathname);
    search(q);
  });
  const q = OC.params().get("q");
  if (q) { form.q.value = q; search(q); }
  form.q.focus();
});
