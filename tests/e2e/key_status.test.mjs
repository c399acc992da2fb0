import { test } from "node:test";
import assert from "node:assert/strict";
import { withConsole, signIn, iamMoto } from "./harness.mjs";

async function createCmekProject(page, name) {
  await page.getByRole("link", { name: "Create New Project" }).first().click();
  await page.getByLabel("Project name").fill(name);
  await page.getByLabel(/Customer-managed encryption keys/).check();
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByText("Project created.").waitFor();
}

/// Reloads the page every 500 ms until the badge of `row` says `status` (at most 20 s).
async function reloadUntilStatus(page, row, status) {
  const deadline = Date.now() + 20_000;
  let seen;
  for (;;) {
    seen = await row.locator("[data-key-status]").getAttribute("data-key-status", { timeout: 5_000 });
    if (seen === status) return;
    if (Date.now() > deadline) throw new Error(`the key stayed ${seen}, never ${status}, in 20 s`);
    await page.waitForTimeout(500);
    await page.reload();
  }
}

const count = (page, status) => page.locator(`a.count[data-status="${status}"]`);

test("Key Status shows an AWS key access_denied once the console's IAM permission is revoked, and active once restored", async (t) => {
  const moto = iamMoto();
  const consoleUser = await moto.createConsoleUser();
  const key = await moto.createKey("us-east-1");

  await withConsole(t, {}, async ({ app, page }) => {
    await signIn(page, app);
    await createCmekProject(page, "Ledger");
    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/AWS KMS/).check();
    await page.getByLabel("Region", { exact: true }).selectOption("us-east-1");
    await page.getByRole("button", { name: "Continue" }).click();
    await page.getByLabel("KMS Key ARN").fill(key.Arn);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();

    await page.getByRole("link", { name: "Key Status", exact: true }).click();
    await page.waitForURL(`${app.url}/key-status`);
    const row = page.locator("tr[data-key]").filter({ hasText: key.Arn });
    assert.equal(await row.count(), 1);
    assert.equal(await row.locator("[data-key-status]").getAttribute("data-key-status"), "active");
    assert.equal(await count(page, "active").locator("strong").textContent(), "1");
    assert.equal(await count(page, "access_denied").locator("strong").textContent(), "0");

    // Revoked: suspected at the next check, confirmed by the one after, then shown.
    await moto.revoke(consoleUser.user);
    await reloadUntilStatus(page, row, "access_denied");
    assert.match(await row.locator(".field-error").textContent(), /AccessDenied/);
    assert.equal(await count(page, "access_denied").locator("strong").textContent(), "1");
    assert.equal(await count(page, "active").locator("strong").textContent(), "0");

    // The count filters the table to the key.
    await count(page, "access_denied").click();
    await page.waitForURL(`${app.url}/key-status?status=access_denied`);
    assert.match(await count(page, "access_denied").getAttribute("class"), /\bcurrent\b/);
    const rows = page.locator("tr[data-key]");
    assert.equal(await rows.count(), 1);
    assert.match(await rows.first().textContent(), new RegExp(key.KeyId));
    assert.equal(await rows.first().locator("[data-key-status]").getAttribute("data-key-status"), "access_denied");
    await count(page, "active").click();
    await page.waitForURL(`${app.url}/key-status?status=active`);
    await page.getByText("No keys match.").waitFor();
    assert.equal(await rows.count(), 0);

    // Granted again: active at the next check (no confirmation needed to recover).
    await moto.grant(consoleUser.user);
    await page.goto(`${app.url}/key-status`);
    await reloadUntilStatus(page, row, "active");
    assert.equal(await count(page, "active").locator("strong").textContent(), "1");
    assert.equal(await count(page, "access_denied").locator("strong").textContent(), "0");
    assert.equal(await row.locator(".field-error").count(), 0, "no error once active");

    // The key's own page: the timeline has the access_denied period.
    await row.getByRole("link", { name: key.Arn }).click();
    await page.locator("#key-status").waitFor();
    assert.equal(await page.locator("#key-status").textContent(), "active");
    await page.locator("svg.timeline").waitFor();
    assert.equal(await page.locator('svg.timeline rect[data-status="access_denied"]').count(), 1);
    assert.ok(await page.locator('svg.timeline rect[data-status="active"]').count() >= 2, "active before and after");
    const history = page.locator("table.history tbody tr");
    assert.equal(await history.count(), 2);
    assert.match(await history.nth(0).textContent(), /access_denied\s*active/);
    assert.match(await history.nth(1).textContent(), /active\s*access_denied.*AccessDenied/s);
  }, {
    ...moto.env(consoleUser.key, consoleUser.secret),
    CMEK_KMS_TIMEOUT: "3s",
    CMEK_KEY_CHECK_INTERVAL: "2s",
  });
});
