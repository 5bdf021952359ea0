// Card office: import people (and their first cards) from CSV or XLSX (POST /people/import).
// A bad file is refused whole; its per-row report (row as the spreadsheet numbers it, column,
// problem) is shown as a table. "Check only" sends dry_run=true: nothing is written.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const form = document.getElementById("import-form");
  const errors = document.getElementById("import-errors");
  const done = document.getElementById("import-done");
  // An example file to fill in: the columns the API reads, one row (made here, not fetched).
  document.getElementById("import-example").addEventListener("click", () => {
    const text = "external_id,name,node,class,phone,card_no,printed_no,chip_uid,card_type,valid_until\r\n"
      + "S2026-0001,Li Lei,2,2,13800000000,9100000001,A0001,,standard,2030-07-31\r\n";
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = OC.el("a", { href: url, download: "people-example.csv", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.querySelector("#import-file").files[0];
    if (!file) return;
    const dry = form.querySelector("#import-dry").checked;
    const button = document.getElementById("import-submit");
    button.disabled = true;
    errors.hidden = done.hidden = true;
    OC.message("import-message", "import.working");
    try {
      const out = await OCX.upload("/people/import" + (dry ? "?dry_run=true" : ""), file);
      if (out.dry_run) {
        OC.message("import-message", "import.checked", { rows: out.rows }, "ok");
      } else {
        OC.message("import-message", "import.imported", { people: out.people_created,
                                                          cards: out.cards_issued }, "ok");
        const body = done.querySelector("tbody");
        body.textContent = "";
        for (const p of out.people) {
          body.append(OC.el("tr", {}, [
            OCX.cell(String(p.row), true),
            OC.el("td", {}, [OC.el("a", { href: "/console/person.html?id=" + p.person_id,
                                          text: "#" + p.person_id })]),
            OCX.cell(p.external_id || ""), OCX.cell(p.card_no === null ? "" : String(p.card_no))]));
        }
        done.hidden = out.people.length === 0;
      }
    } catch (err) {
      const problem = err.problem;
      if (err.status === 422 && problem && Array.isArray(problem.errors)) {
        OC.message("import-message", "import.rejected", { n: problem.error_count }, "error");
        const body = errors.querySelector("tbody");
        body.textContent = "";
        for (const e of problem.errors) {
          body.append(OC.el("tr", {}, [OCX.cell(String(e.row), true), OCX.cell(e.column),
                                       OCX.cell(e.message)]));
        }
        errors.hidden = false;
      } else {
        OCX.refused("import-message", err);
      }
    } finally {
      button.disabled = false;
    }
  });
});
