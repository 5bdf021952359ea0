// The log-in page: POST /auth/login, then the first page the role may use.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (OC.token() && OC.me() && OC.home()) { location.href = OC.home(); return; }
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("login-submit");
    button.disabled = true;
    OC.message("login-message", null);
    try {
      await OC.login(form.username.value.trim(), form.password.value);
      OC.applyI18n();  // the user's own language, now that we know who it is
      const next = OC.home();
      if (next) location.href = next;
      else { OC.header(); OC.applyI18n(); OC.message("login-message", "login.no_pages"); }
    } catch (err) {
      if (err.status === 401 || err.status === 400) OC.message("login-message", "login.failed", null, "error");
      else if (err.status === 429) OC.message("login-message", "login.limited", null, "error");
      else OC.fail("login-message", err);
    } finally {
      button.disabled = false;
    }
  });
});
