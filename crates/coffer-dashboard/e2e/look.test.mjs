// How the dashboard looks and works without a mouse, page by page: axe-core finds no serious or
// critical violation, a phone's width (390 px) needs no sideways scrolling, and the keyboard
// focus is visible on every control Tab reaches (the header's once, each page's main content
// whole). The pages are the sign-in page, the 404 page, a store's secrets, a secret, a service,
// a form shown again with its errors, a new token's value shown once, and every page the
// header's navigation links to (so a new page is checked as soon as it is linked).
//
// With COFFER_SCREENSHOTS=DIR it saves each page at laptop width (and the main ones at phone
// width) there; the committed ones in docs/dashboard/ come from
// `COFFER_SCREENSHOTS=$PWD/docs/dashboard crates/coffer-dashboard/e2e/run`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { signIn, start } from "./harness.mjs";

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const shots = process.env.COFFER_SCREENSHOTS;

let env;
before(async () => { env = await start(); }, { timeout: 60_000 });
after(async () => { await env?.stop(); });

// axe-core's serious and critical violations on the page shown, as readable lines. axe is
// evaluated through the DevTools protocol, which the page's CSP does not govern; the page's own
// script-src stays as strict as it is.
async function axeViolations(page) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

// Tabs through the page's controls: from the top through the header (`from: "top"`), or from
// the main content through every control in it (`from: "main"`, until focus leaves it). Each
// control reached must show a focus indicator: its look focused (outline or box shadow) differs
// from its look blurred. Returns the problems.
async function focusProblems(page, from) {
  const problems = [];
  if (from === "main") await page.locator("#main").focus();
  else await page.locator("body").focus();
  const seen = [];
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press("Tab");
    const stop = await page.evaluate((from) => {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      if (from === "main" && !e.closest("#main")) return null;
      if (from === "top" && e.closest("#main")) return null;
      // Back at a control already checked: Tab went round.
      if (e.hasAttribute("data-look-seen")) return null;
      e.setAttribute("data-look-seen", "");
      const look = () => {
        const s = getComputedStyle(e);
        return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0
          ? `outline ${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`
          : `shadow ${s.boxShadow}`;
      };
      const focused = look();
      // Blurred, to compare; Tab goes on from here all the same.
      e.blur();
      const indicated = focused !== look() && focused !== "shadow none";
      const what = `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""} "${(e.textContent || e.getAttribute("aria-label") || e.name || "").trim().slice(0, 30)}"`;
      return { what, indicated };
    }, from);
    if (stop === null) break;
    seen.push(stop.what);
    if (!stop.indicated) problems.push(`no visible focus on ${stop.what}`);
  }
  if (seen.length === 0 && from === "top") problems.push("Tab reaches no control in the header");
  return problems;
}

// The checks on the page that `open` shows (a URL to go to, or a function that gets the page
// there), at both widths; `name` for messages and screenshots.
async function check(page, open, name, { phoneShot = false, shot = true } = {}) {
  const go = typeof open === "string" ? () => page.goto(open) : open;
  const problems = [];
  await page.setViewportSize(LAPTOP);
  await go();
  for (const v of await axeViolations(page)) problems.push(`${name}: ${v}`);
  for (const f of await focusProblems(page, "main")) problems.push(`${name}: ${f}`);
  if (shots && shot) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  // A page answering a POST is not shown again: measured as it stands.
  if (typeof open === "string") await go();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) problems.push(`${name}: ${overflow} px wider than a ${PHONE.width} px phone`);
  for (const v of await axeViolations(page)) problems.push(`${name} (phone): ${v}`);
  if (shots && phoneShot) await page.screenshot({ path: join(shots, `${name}-phone.png`), fullPage: true });
  return problems;
}

test("every page passes axe-core, fits a phone and shows the keyboard focus", async () => {
  const { base, token, api, browser } = env;
  // Something on every page: a store with secrets, one with a comment and two scopes.
  const store = (await api("POST", "/secrets_store/stores", { name: "production" })).result.id;
  const created = await api("POST", `/secrets_store/stores/${store}/secrets`, [
    { name: "DATABASE_URL", value: "v1", scopes: ["workers"], comment: "the primary database" },
    { name: "STRIPE_KEY", value: "v2", scopes: ["workers", "ai_gateway"], comment: "payments" },
  ]);
  const secret = created.result[0].id;
  const service = (await api("POST", "/secrets_store/services", {
    name: "checkout",
    secrets_store_secrets: [{ binding: "DB", store_id: store, secret_name: "DATABASE_URL" }],
  })).result.id;

  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  problems.push(...await check(page, base + "/dashboard/sign-in", "sign-in", { phoneShot: true }));
  await page.setViewportSize(LAPTOP);
  await page.goto(base + "/dashboard/sign-in");
  problems.push(...(await focusProblems(page, "top")).map((p) => `sign-in header: ${p}`));
  await signIn(page, base, token);
  problems.push(...(await focusProblems(page, "top")).map((p) => `header: ${p}`));
  problems.push(...await check(page, base + "/dashboard/no-such-page", "not-found"));
  problems.push(...await check(page, `${base}/dashboard/stores/${store}`, "secrets", { phoneShot: true }));
  problems.push(...await check(page, `${base}/dashboard/stores/${store}/secrets/${secret}`, "secret"));
  problems.push(...await check(page, `${base}/dashboard/services/${service}`, "service"));
  // A form shown again with the API's errors beside its fields.
  problems.push(...await check(page, async () => {
    await page.goto(base + "/dashboard/stores");
    await page.getByLabel("Name").fill("not a valid name!");
    await Promise.all([page.waitForEvent("framenavigated"), page.getByRole("button", { name: "Create store" }).click()]);
    await page.waitForLoadState();
    assert.ok(await page.locator("[aria-invalid=true]").count() > 0, "the form shows its error");
  }, "stores-error"));
  // A new token's value, shown once.
  problems.push(...await check(page, async () => {
    await page.goto(base + "/dashboard/tokens");
    await page.getByLabel("Name").fill("look");
    await Promise.all([page.waitForEvent("framenavigated"), page.getByRole("button", { name: "Create token" }).click()]);
    await page.waitForLoadState();
    assert.ok(await page.locator("#once-value").count() === 1, "the value is shown");
    // No screenshot: it would show a token's value (of a server gone by then, but still).
  }, "token-created", { shot: false }));
  // Every page the navigation leads to.
  await page.setViewportSize(LAPTOP);
  await page.goto(base + "/dashboard/stores");
  const links = await page.locator("header nav a").evaluateAll((as) => as.map((a) => a.href));
  assert.ok(links.length >= 1, "the header has a navigation");
  for (const href of links) {
    const name = new URL(href).pathname.replace(/^\/dashboard\/?/, "").replaceAll("/", "-") || "home";
    problems.push(...await check(page, href, name, { phoneShot: name === "stores" }));
  }
  assert.deepEqual(problems, []);
  await context.close();
});
