// What the browser tests share: a `coffer dev` on a free loopback port (COFFER_BIN), its
// operator credentials, API calls as that operator, and Debian's Chromium (CHROMIUM).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

// Starts `coffer dev` on a data dir of its own and Chromium; `stop()` ends both.
export async function start() {
  const dir = mkdtempSync(join(tmpdir(), "coffer-dashboard-e2e-"));
  const data = join(dir, "data");
  const server = spawn(process.env.COFFER_BIN, ["dev", "--data-dir", data, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  server.stderr.on("data", (d) => { log += d; });
  const base = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`coffer dev exited (${code}): ${log}`)));
  });
  const creds = JSON.parse(readFileSync(join(data, "dev-credentials.json"), "utf8"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The test runs as root in CI, where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
  });
  const token = creds.api_token;
  const account = creds.account_id;
  // An API call as the operator: the JSON answer, which must be a success.
  const api = async (method, path, body) => {
    const res = await fetch(`${base}/client/v4/accounts/${account}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    assert.equal(res.status, 200, JSON.stringify(json));
    return json;
  };
  const stop = async () => {
    await browser.close();
    server.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  return { base, token, account, browser, api, stop };
}

// Signs `page` in with `token`; resolves on the stores page.
export async function signIn(page, base, token) {
  await page.goto(base + "/dashboard/sign-in");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/dashboard\/stores$/);
}
