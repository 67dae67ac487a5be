// Progressive enhancement for Coffer's dashboard; every page works without it.
// "Add another secret" adds a row to the create form in place (without it, the link reloads
// the page with one more row). A token's value shown once gets a "Copy" button (without it,
// the value is copied from its field by hand), and leaves the page when the page is hidden.
"use strict";

// A value typed into a secret's field is never kept by the page: browsers restore a textarea's
// state when the page comes back from history or the back/forward cache (the forms also say
// autocomplete="off", which is what stops that where the browser honours it).
const clearValues = () => {
  for (const el of document.querySelectorAll("textarea.secret-value")) el.value = "";
};
window.addEventListener("pagehide", clearValues);
window.addEventListener("pageshow", clearValues);
// A value shown once is gone once the page is left: a page restored from the back/forward cache
// does not show it again.
window.addEventListener("pagehide", () => {
  for (const el of document.querySelectorAll("input.once-value")) el.value = "";
});
window.addEventListener("pageshow", (event) => {
  if (!event.persisted) return;
  for (const el of document.querySelectorAll("input.once-value")) el.value = "";
});
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        const done = document.getElementById("once-copied");
        if (done) done.hidden = false;
      } catch {
        field.select();
      }
    });
  }
  for (const field of document.querySelectorAll("input.once-value")) {
    field.addEventListener("focus", () => field.select());
  }
});
document.addEventListener("DOMContentLoaded", () => {
  const add = document.getElementById("add-row");
  const form = document.getElementById("create-secrets");
  if (!add || !form) return;
  add.addEventListener("click", (event) => {
    const rows = form.querySelectorAll("fieldset.secret-row");
    const last = rows[rows.length - 1];
    if (!last) return;
    event.preventDefault();
    const next = Number(last.dataset.row) + 1;
    const row = last.cloneNode(true);
    row.dataset.row = String(next);
    row.querySelector("legend").textContent = "Secret " + (rows.length + 1);
    for (const el of row.querySelectorAll("[id], [name], [for], [aria-describedby]")) {
      for (const attr of ["id", "name", "for", "aria-describedby"]) {
        const v = el.getAttribute(attr);
        if (v) el.setAttribute(attr, v.replace(/-\d+(?=$|-)/, "-" + next));
      }
    }
    for (const el of row.querySelectorAll(".error")) el.remove();
    for (const el of row.querySelectorAll("input, textarea")) {
      el.removeAttribute("aria-invalid");
      el.removeAttribute("aria-describedby");
      if (el.type === "checkbox") el.checked = el.value === "workers";
      else el.value = "";
    }
    last.after(row);
    row.querySelector("input, textarea").focus();
  });
});
