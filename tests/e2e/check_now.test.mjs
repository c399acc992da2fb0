// Check now in the browser, as an auditor, on a key the customer has just disabled: the page
// says it is confirming the revocation while the second probe waits, then shows the recorded
// status and what it means; the cluster of a `stop` project is made inaccessible by the
// reaction that recording queues (the periodic reconciliation is set out of reach, so only
// that reaction can do it). Built-in Local KMS, OpenID provider for the auditor's sign-in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withConsole, signIn } from "./harness.mjs";

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

function oidc() {
  const issuer = process.env.CMEK_TEST_OIDC_ISSUER;
  if (!issuer) throw new Error("CMEK_TEST_OIDC_ISSUER must name the OpenID provider (scripts/test starts it)");
  return {
    CMEK_OIDC_ISSUER: issuer,
    CMEK_OIDC_CLIENT_ID: "cmek-console",
    CMEK_OIDC_CLIENT_SECRET: "cmek-console-test-secret",
  };
}

/// The Console API as `secret`; fails the test on any answer but `expected`.
function api(app, secret) {
  return async (method, path, body, expected) => {
    const response = await fetch(`${app.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    assert.equal(response.status, expected, `${method} ${path}: ${text}`);
    return JSON.parse(text);
  };
}

/// An API key of `role` from the API Keys page; returns its secret.
async function createApiKey(page, name, role) {
  await page.getByRole("link", { name: "API Keys" }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Role").selectOption(role);
  await page.getByRole("button", { name: "Create" }).click();
  const secret = (await page.locator("#new-key").textContent()).trim();
  assert.match(secret, /^cmek_/);
  return secret;
}

test("an auditor presses Check now on a disabled key: 'confirming…', then disabled, and the stop policy makes the cluster inaccessible", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    page.on("dialog", (dialog) => dialog.accept()); // Disable asks first
    await signIn(page, app);

    // The owner's setup: a local key, and over the API a `stop` project, its key and a cluster.
    const owner = api(app, await createApiKey(page, "setup", "owner"));
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Local KMS" }).click();
    await page.getByLabel("Name").fill("dev key");
    await page.getByRole("button", { name: "Create key" }).click();
    const row = page.getByRole("row", { name: /dev key/ });
    const localKeyId = (await row.locator("code").textContent()).trim();
    assert.match(localKeyId, new RegExp(`^${UUID.source}$`));

    const project = await owner("POST", "/api/v1/projects", { name: "Ledger", cmek_enabled: true, revocation_policy: "stop" }, 201);
    assert.equal(project.revocation_policy, "stop");
    const key = await owner("POST", `/api/v1/projects/${project.id}/encryption-keys`,
      { provider: "local", region: "us-east-1", key_id: localKeyId }, 201);
    assert.equal(key.status, "active");
    const cluster = await owner("POST", `/api/v1/projects/${project.id}/clusters`,
      { name: "orders", provider: "local", regions: ["us-east-1"] }, 201);
    assert.equal(cluster.state, "available");

    // The customer disables the key; the console does not know yet (its monitor is an hour away).
    await row.getByRole("button", { name: "Disable" }).click();
    await row.getByText("Disabled", { exact: true }).waitFor();

    // An auditor, invited by the owner, signs in with SSO.
    await page.getByRole("link", { name: "Members" }).click();
    await page.getByLabel("Email").fill("grace@example.com");
    await page.getByLabel("Role", { exact: true }).selectOption("auditor");
    await page.getByRole("button", { name: "Invite" }).click();
    await page.getByRole("cell", { name: "grace@example.com" }).waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${app.url}/sign-in`);
    await page.getByRole("link", { name: "Sign in with SSO" }).click();
    await page.locator("input[name=login]").fill("grace");
    await page.locator("input[name=password]").fill("any password");
    await page.locator("button[type=submit]").click();
    await page.locator("input[name=prompt][value=consent]").waitFor({ state: "attached" });
    await page.locator("button[type=submit]").click();
    await page.waitForURL(`${app.url}/projects`);
    assert.match(await page.locator(".who").textContent(), /Auditor/);

    // The key page still says active: nothing has looked at the key since it was disabled.
    const keyUrl = `${app.url}/projects/${project.id}/encryption-keys/${key.id}`;
    await page.goto(keyUrl);
    assert.equal((await page.locator("#key-status").textContent()).trim(), "active");
    const progress = page.locator("p.check-progress");
    assert.equal(await progress.isHidden(), true);

    // Check now: "confirming…" while the second probe waits (CMEK_KEY_CONFIRM_DELAY, 3 s).
    const pressed = Date.now();
    await page.getByRole("button", { name: "Check now" }).click();
    await progress.filter({ hasText: "confirming…" }).waitFor({ timeout: 10_000 });
    assert.match(await progress.textContent(), /disabled: confirming…/);
    assert.match(page.url(), /\/encryption-keys\/[0-9a-f-]{36}$/, "still on the page, not yet navigated");

    // Then the page the check leads to: the status recorded and the notice saying so.
    await page.waitForURL(`${keyUrl}?checked=confirmed`, { timeout: 15_000 });
    const waited = Date.now() - pressed;
    assert.ok(waited >= 3_000, `the second probe waited only ${waited} ms`);
    assert.equal((await page.locator("#key-status").textContent()).trim(), "disabled");
    assert.equal(await progress.isVisible(), true);
    assert.match(await progress.textContent(), /A second probe confirmed that the KMS refuses the key/);
    const history = page.locator("table.history tbody tr");
    assert.equal(await history.count(), 1);
    assert.match(await history.first().textContent(), /active\s*disabled/);

    // The cluster: made inaccessible in the background, within a few seconds.
    await page.goto(`${app.url}/clusters/${cluster.id}`);
    const deadline = Date.now() + 10_000;
    let state;
    for (;;) {
      state = (await page.locator("#state").textContent()).trim();
      if (state === "inaccessible" || Date.now() > deadline) break;
      await page.waitForTimeout(250);
      await page.reload();
    }
    assert.equal(state, "inaccessible", "the stop policy did not make the cluster inaccessible in 10 s");
    assert.equal(await page.locator("#key-effect").getAttribute("data-effect"), "waiting_for_key");
    assert.equal(await page.getByRole("button", { name: "Resume" }).count(), 0, "auditors change nothing");
  }, {
    ...oidc(),
    CMEK_KEY_CONFIRM_DELAY: "3s",
    // Neither the monitor nor the periodic reconciliation may get there first.
    CMEK_KEY_CHECK_INTERVAL: "1h",
    CMEK_RECONCILE_INTERVAL: "1h",
  });
});
