// The dashboard in a real browser: Debian's Chromium, driven headless by playwright-core,
// against a `coffer dev` this test starts on a free loopback port (harness.mjs).
// Run by ./run (which scripts/test calls); COFFER_BIN names the coffer binary.
//
// The tests run in order on one server: the second finds the first one's acts in the audit log.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { signIn, start } from "./harness.mjs";

let env, base, token, browser, api;

before(async () => {
  env = await start();
  ({ base, token, browser, api } = env);
}, { timeout: 60_000 });

after(async () => { await env?.stop(); });

// A multi-line value with characters form encoding changes: what the dashboard must store as is.
const multiLine = "-----BEGIN KEY-----\nAb+/c= %41 & ü\n  indented  \n-----END KEY-----\n";

test("sign in, create a store and two secrets, search, delete, edit, duplicate, sign out", async () => {
  const page = await browser.newPage();
  const violations = [];
  page.on("console", (m) => { if (m.type() === "error") violations.push(m.text()); });

  // `/` leads to sign-in, keeping nothing but the dashboard.
  await page.goto(base + "/");
  assert.match(page.url(), /\/dashboard\/sign-in/);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/dashboard\/stores$/);
  assert.ok(await page.getByText("super_admin").isVisible());
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "coffer_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict" && session.path === "/dashboard");
  assert.ok(!cookies.some((c) => c.value.includes(token)), "the token stays on the server");

  // A store.
  await page.getByLabel("Name").fill("e2e-store");
  await page.getByRole("button", { name: "Create store" }).click();
  await page.waitForURL(/\/dashboard\/stores\/[0-9a-f]{32}$/);
  assert.ok(await page.getByRole("heading", { name: "Secrets of e2e-store" }).isVisible());

  // Two secrets at once: "Add another secret" adds a row in place (the script), values are
  // textareas (newlines kept, no password manager) and never come back.
  await page.getByRole("link", { name: "Add another secret" }).click();
  assert.equal(await page.locator("fieldset.secret-row").count(), 2);
  await page.locator("#name-0").fill("DATABASE_URL");
  await page.locator("#value-0").fill("e2e-value-one");
  await page.locator("#comment-0").fill("primary <b>db</b><img src=x onerror=\"window.__xss=1\">");
  await page.locator("#name-1").fill("API_KEY");
  await page.locator("#value-1").fill(multiLine);
  assert.equal(await page.locator("#value-1").evaluate((e) => e.tagName), "TEXTAREA");
  assert.equal(await page.locator("#value-1").getAttribute("autocomplete"), "off");
  // The page after the POST has the same URL: wait for the new document itself.
  await Promise.all([
    page.waitForEvent("framenavigated"),
    page.getByRole("button", { name: "Create", exact: true }).click(),
  ]);
  await page.waitForLoadState();
  const rows = page.locator("tbody tr");
  assert.equal(await rows.count(), 2);
  const html = await page.content();
  assert.ok(!html.includes("e2e-value-one") && !html.includes("e2e-value-two"));
  // Stored exactly as typed (a browser sends the line breaks as CRLF): read back through a
  // service bound to it.
  const store = page.url().match(/stores\/([0-9a-f]{32})/)[1];
  const deployed = await api("POST", "/secrets_store/services", {
    name: "e2e-reader",
    secrets_store_secrets: [{ binding: "KEY", store_id: store, secret_name: "API_KEY" }],
  });
  const reader = deployed.result.service_token;
  const read = async () => {
    const r = await fetch(`${base}/runtime/v1/bindings/KEY`, { headers: { authorization: `Bearer ${reader}` } });
    assert.equal(r.status, 200);
    return r.text();
  };
  assert.equal(await read(), multiLine);
  // A page shown again from history keeps no value: the forms holding one say
  // autocomplete="off" (browsers that honour it keep no form state), and the script empties
  // the value fields whenever the page is shown (those that do not).
  assert.equal(await page.locator("#create-secrets").getAttribute("autocomplete"), "off");
  await page.locator("#value-0").fill("typed-then-left");
  await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true })));
  assert.equal(await page.locator("#value-0").inputValue(), "", "a value survived the page being shown again");
  // The comment renders as text, not markup.
  assert.ok(await page.getByText("primary <b>db</b>").isVisible());
  assert.equal(await page.locator("td b, td img").count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected script ran");

  // Search.
  await page.getByLabel("Search by name or comment").fill("primary");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/search=primary/);
  assert.equal(await rows.count(), 1);
  assert.ok(await page.getByRole("cell", { name: "DATABASE_URL" }).isVisible());

  // Delete, confirmed by typing the name.
  await page.getByText("Delete…").click();
  await page.getByLabel("Type DATABASE_URL to confirm").fill("DATABASE_URL");
  await page.getByRole("button", { name: "Delete secret" }).click();
  await page.waitForURL(/\/dashboard\/stores\/[0-9a-f]{32}$/);
  assert.equal(await rows.count(), 1);
  assert.ok(await page.getByRole("cell", { name: "API_KEY" }).isVisible());

  // Edit a value and a scope, then duplicate.
  await page.getByRole("link", { name: "API_KEY" }).click();
  await page.waitForURL(/\/secrets\/[0-9a-f]{32}$/);
  await page.getByLabel("New value").fill("e2e-value-three\n+ % & ü  ");
  await page.getByRole("group", { name: "Scopes", exact: true }).getByLabel("ai_gateway").check();
  await Promise.all([
    page.waitForEvent("framenavigated"),
    page.getByRole("button", { name: "Save changes" }).click(),
  ]);
  await page.waitForLoadState();
  assert.ok(await page.getByText("workers, ai_gateway").isVisible());
  assert.equal(await page.locator("dl.facts dd").nth(3).textContent(), "2", "a new version");
  assert.ok(!(await page.content()).includes("e2e-value-three"));
  assert.equal(await read(), "e2e-value-three\n+ % & ü  ");
  await api("DELETE", `/secrets_store/services/${deployed.result.id}`);
  await page.getByLabel("New name").fill("API_KEY_COPY");
  await page.getByRole("button", { name: "Duplicate", exact: true }).click();
  await page.getByRole("heading", { name: "API_KEY_COPY" }).waitFor();
  await page.getByRole("link", { name: "e2e-store" }).click();
  await page.waitForURL(/\/dashboard\/stores\/[0-9a-f]{32}$/);
  assert.equal(await rows.count(), 2);

  // Sign out: back to sign-in, and the stores page needs signing in again.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/dashboard\/sign-in$/);
  await page.goto(base + "/dashboard/stores");
  assert.match(page.url(), /\/dashboard\/sign-in\?next=/);
  assert.deepEqual(violations, [], "no console errors (a CSP violation would be one)");
  await page.close();
});

test("a token made and revoked, its value shown once; the audit log shows the acts; the chain verifies", async () => {
  const context = await browser.newContext();
  // The copy button writes to the clipboard; reading it back needs the permission.
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  const violations = [];
  page.on("console", (m) => { if (m.type() === "error") violations.push(m.text()); });
  await signIn(page, base, token);
  const me = (await page.locator(".who .token").textContent()).trim();

  // A token: its value on the answer page only, with a working copy button.
  await page.getByRole("link", { name: "Tokens", exact: true }).click();
  await page.waitForURL(/\/dashboard\/tokens$/);
  await page.getByLabel("Name").fill("e2e <token>");
  await page.getByLabel("Role").selectOption("secrets_store_reporter");
  await page.getByRole("button", { name: "Create token" }).click();
  await page.getByRole("heading", { name: "Token created" }).waitFor();
  const value = await page.locator("#once-value").inputValue();
  const verify = async (t) => (await fetch(`${base}/client/v4/user/tokens/verify`, { headers: { authorization: `Bearer ${t}` } })).status;
  assert.equal(await verify(value), 200, "the value shown is the token");
  const copy = page.getByRole("button", { name: "Copy" });
  assert.ok(await copy.isVisible(), "the script shows the copy button");
  await copy.click();
  await page.getByText("Copied.").waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), value);
  // Leaving the page empties the field: the back/forward cache cannot show the value again.
  await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pagehide", { persisted: true })));
  assert.equal(await page.locator("#once-value").inputValue(), "", "the value outlived the page");
  await page.getByRole("link", { name: "Back to the tokens" }).click();
  await page.waitForURL(/\/dashboard\/tokens$/);
  assert.ok(!(await page.content()).includes(value), "shown once");
  const row = page.locator("tbody tr", { hasText: "e2e <token>" });
  await row.getByText("Revoke…").click();
  await row.getByRole("button", { name: "Revoke token" }).click();
  await page.waitForURL(/\/dashboard\/tokens$/);
  await page.locator("tbody tr", { hasText: "e2e <token>" }).getByText("revoked").waitFor();
  assert.equal(await verify(value), 401, "revoked");

  // The audit log: the first test's acts, by this session's token.
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.waitForURL(/\/dashboard\/audit$/);
  const acts = page.locator("tbody tr");
  const act = (action, resource) => acts.filter({ hasText: resource }).filter({
    has: page.locator("td.action", { hasText: new RegExp(`^${action}$`) }),
  });
  for (const [action, resource] of [
    ["create", "store · e2e-store"],
    ["create", "secret · DATABASE_URL"],
    ["update", "secret · API_KEY"],
    ["delete", "secret · DATABASE_URL"],
    ["revoke", "token · e2e <token>"],
  ]) {
    const found = act(action, resource);
    assert.ok(await found.count() >= 1, `${action} ${resource} in the log`);
    // (`coffer dev`'s token is the instance operator's, which a badge beside its name says.)
    const cell = found.first().locator("td.actor");
    const actor = (await cell.locator("a").textContent()).trim();
    assert.equal(actor, me, `${action} ${resource}: actor ${actor}, not ${me}`);
    assert.equal((await cell.locator(".badge").textContent()).trim(), "operator");
  }
  // An entry's details open without script.
  const first = acts.first();
  await first.getByText("Details").click();
  assert.ok(await first.locator("pre.entry").isVisible());
  await page.getByRole("button", { name: "Verify the chain" }).click();
  // (A GET form without fields leaves a bare "?" on the URL.)
  await page.waitForURL(/\/dashboard\/audit\/verify\??$/);
  assert.ok(await page.getByText("The chain is intact.").isVisible());
  assert.deepEqual(violations, [], "no console errors (a CSP violation would be one)");
  await context.close();
});

test("a reporter sees no write controls, and its forged write is refused", async () => {
  const reporter = (await api("POST", "/tokens", { name: "e2e reporter", role: "secrets_store_reporter" })).result.value;
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, base, reporter);
  assert.ok(await page.getByText("secrets_store_reporter").isVisible());
  assert.equal(await page.getByRole("button", { name: "Create store" }).count(), 0);
  assert.equal(await page.getByText("Delete…").count(), 0);
  // Nor the pages of a role that manages the account.
  assert.equal(await page.getByRole("link", { name: "Tokens", exact: true }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Services" }).count(), 1);
  // A write forged from its own session, with its own CSRF token, is refused by the server.
  // (A form, since the CSP allows no fetch at all.)
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/dashboard/stores")),
    page.evaluate(() => {
      const form = document.createElement("form");
      form.method = "post";
      form.action = "/dashboard/stores";
      const csrf = document.querySelector("input[name=csrf]").value;
      for (const [name, value] of [["csrf", csrf], ["name", "forged"]]) {
        const input = document.createElement("input");
        input.type = "hidden";
        input.name = name;
        input.value = value;
        form.append(input);
      }
      document.body.append(form);
      form.submit();
    }),
  ]);
  assert.equal(response.status(), 403);
  // The refusal page names the permission the role lacks (waited for: the URL stays the same).
  await page.getByText("secrets_store:edit").waitFor({ timeout: 10000 });
  await context.close();
});

test("a form posted from another origin, with the session's cookie, changes nothing", async () => {
  // Another origin on the same host (another port: the same site, so the browser sends the
  // SameSite=Strict cookie along): the server's Origin and CSRF checks must refuse it.
  const evil = createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><form id="f" method="post" action="${base}/dashboard/stores">
      <input name="name" value="csrf-forged"><input name="csrf" value="guessed"></form>`);
  });
  await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, base, token);
  await page.goto(`http://127.0.0.1:${evil.address().port}/`);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.evaluate(() => document.getElementById("f").submit()),
  ]);
  assert.equal(response.status(), 403);
  const stores = await api("GET", "/secrets_store/stores?per_page=100");
  assert.ok(!stores.result.some((s) => s.name === "csrf-forged"), "no store was made");
  evil.close();
  await context.close();
});
