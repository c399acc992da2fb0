// Changing a key in the browser, with the built-in Local KMS: the key page shows what the key
// protects before Delete (the impact), then Replace key with JavaScript (the form says what
// it is doing, the change's progress shows and ends done) and without it (a plain form post
// that comes back with the field's error, then works); the replaced key's impact turns safe.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withConsole, signIn } from "./harness.mjs";

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/// Through the API with the browser's own session: the setup, not what is tested.
async function api(page, app, method, path, body) {
  const response = await page.request.fetch(`${app.url}${path}`, {
    method,
    headers: { "content-type": "application/json", origin: app.url },
    data: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok(), `${method} ${path}: ${response.status()} ${await response.text()}`);
  return response.json();
}

/// A CMEK project with a local key in us-east-1, a cluster using it, and a second local key
/// to replace it with; the key page's URL and the replacement's id.
async function setUp(page, app) {
  await signIn(page, app);
  const project = await api(page, app, "POST", "/api/v1/projects", { name: "Ledger", cmek_enabled: true });
  const first = await api(page, app, "POST", "/api/v1/local-kms/keys", { name: "first" });
  const second = await api(page, app, "POST", "/api/v1/local-kms/keys", { name: "second" });
  const key = await api(page, app, "POST", `/api/v1/projects/${project.id}/encryption-keys`,
    { provider: "local", region: "us-east-1", key_id: first.id });
  await api(page, app, "POST", `/api/v1/projects/${project.id}/clusters`,
    { name: "ledger", provider: "local", regions: ["us-east-1"] });
  return { keyUrl: `${app.url}/projects/${project.id}/encryption-keys/${key.id}`, second: second.id };
}

test("the key page shows its impact before Delete and replaces the key with JavaScript", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    const { keyUrl, second } = await setUp(page, app);
    await page.goto(keyUrl);
    // The impact, before anyone deletes or disables it: not safe, naming the cluster.
    const impact = page.locator("ul.verdicts li").filter({ hasText: "Delete the key here" });
    assert.match(await impact.textContent(), /not safe/);
    assert.match(await impact.textContent(), /ledger/);

    // A disabled key: its checks stream in on the page, the refusal says nothing changed.
    const off = await api(page, app, "POST", "/api/v1/local-kms/keys", { name: "switched off" });
    await api(page, app, "POST", `/api/v1/local-kms/keys/${off.id}/disable`, {});
    await page.reload();
    await page.getByLabel("New local key").selectOption(off.id);
    await page.getByRole("button", { name: "Test Encryption Key and Replace" }).click();
    await page.locator(".replace-checklist").getByText("The new key did not pass every required check").waitFor();
    assert.ok(await page.locator(".replace-checklist li.check").count() > 0, "the checks were shown as they ran");
    assert.match(page.url(), /encryption-keys\/[0-9a-f-]{36}$/);

    await page.getByLabel("New local key").selectOption(second);
    const replaceForms = page.locator("form.replace-form");
    await Promise.all([
      page.waitForURL(/\?changed=replace#change$/),
      page.getByRole("button", { name: "Test Encryption Key and Replace" }).click(),
    ]);
    assert.equal(await page.getByText("The new key passed every check").isVisible(), true);
    // The page refreshes itself until the change ends.
    await page.locator("#change-state", { hasText: "done" }).waitFor({ timeout: 30_000 });
    assert.match(await page.locator("#change-progress").textContent(), /1 of 1 data keys moved/);
    assert.equal(await page.getByText("This key was replaced by").isVisible(), true);
    const after = page.locator("ul.verdicts li").filter({ hasText: "Delete the key here" });
    assert.match(await after.textContent(), /\bsafe\b/);
    assert.doesNotMatch(await after.textContent(), /not safe/);
    assert.equal(await replaceForms.count(), 0, "a replaced key offers no second replacement");
  });
});

test("Replace key works without JavaScript, and a key that fails its checks is shown inline", async (t) => {
  await withConsole(t, { javaScriptEnabled: false }, async ({ app, page }) => {
    const { keyUrl, second } = await setUp(page, app);
    const off = await api(page, app, "POST", "/api/v1/local-kms/keys", { name: "switched off" });
    await api(page, app, "POST", `/api/v1/local-kms/keys/${off.id}/disable`, {});
    await page.goto(keyUrl);
    // The key itself is not offered as its own replacement.
    const offered = await page.getByLabel("New local key").locator("option").evaluateAll((os) => os.map((o) => o.value));
    assert.deepEqual(offered.sort(), [second, off.id].sort());
    // A disabled key fails its checks: the page says so, with the checklist; nothing changed.
    await page.getByLabel("New local key").selectOption(off.id);
    await page.getByRole("button", { name: "Test Encryption Key and Replace" }).click();
    await page.getByText("The new key did not pass every required check").waitFor();
    assert.equal(await page.locator("ul.checklist").isVisible(), true);
    assert.equal(await page.getByText("This key has not been changed.").isVisible(), true);
    await page.getByLabel("New local key").selectOption(second);
    await page.getByRole("button", { name: "Test Encryption Key and Replace" }).click();
    await page.waitForURL(/\?changed=replace#change$/);
    assert.match(page.url(), UUID);
    // Without JavaScript the page refreshes itself (meta refresh) until the change ends.
    await page.locator("#change-state", { hasText: "done" }).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByRole("button", { name: "Test Encryption Key and Replace" }).count(), 0);
  });
});
