import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { withConsole, signIn, moto } from "./harness.mjs";

async function createCmekProject(page, name) {
  await page.getByRole("link", { name: "Create New Project" }).first().click();
  await page.getByLabel("Project name").fill(name);
  await page.getByLabel(/Customer-managed encryption keys/).check();
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByText("Project created.").waitFor();
}

test("an owner walks the AWS wizard: policy to copy and download, a failed test, then a key", async (t) => {
  const kms = moto();
  const good = await kms.createKey("us-east-1");
  const disabled = await kms.createKey("us-east-1");
  await kms.disableKey("us-east-1", disabled.KeyId);

  await withConsole(t, {}, async ({ app, page, context }) => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: app.url });
    await signIn(page, app);
    await createCmekProject(page, "Payments");

    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/AWS KMS/).check();
    await page.getByLabel("Region", { exact: true }).selectOption("us-east-1");
    await page.getByRole("button", { name: "Continue" }).click();

    // Step 2: the JSON to paste, filled in, with copy and download.
    const policy = page.locator("#policy-0");
    assert.match(await policy.textContent(), /ec2\.us-east-1\.amazonaws\.com/);
    await page.locator("[data-copy='#policy-0']").click();
    const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
    assert.equal(copied.Id, "cmek-policy");
    assert.equal(copied.Statement[1].Principal.AWS, "arn:aws:iam::123456789012:root");
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "Download ROLE-TRUST-POLICY.JSON" }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "ROLE-TRUST-POLICY.JSON");
    assert.deepEqual(JSON.parse(await readFile(await download.path(), "utf8")), copied);

    // Step 3-4 with a disabled key: the checks appear, the failure says how to fix it.
    await page.getByLabel("KMS Key ARN").fill(disabled.Arn);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    const enabled = page.locator("#checklist [data-check='enabled']");
    await enabled.waitFor();
    assert.match(await enabled.getAttribute("class"), /fail/);
    assert.match(await enabled.textContent(), /Enable the key/);
    await page.getByText("The key did not pass every required check").waitFor();

    // A good key: created, and listed as active on the project.
    await page.getByLabel("KMS Key ARN").fill(good.Arn);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();
    const row = page.getByRole("row", { name: new RegExp(good.KeyId) });
    assert.equal(await row.locator(".badge").textContent(), "active");
  }, kms.env);
});

test("an alias ARN is refused inline, naming the reason", async (t) => {
  const kms = moto();
  await withConsole(t, {}, async ({ app, page }) => {
    await signIn(page, app);
    await createCmekProject(page, "Aliases");
    const projectUrl = page.url().split("?")[0];
    await page.goto(`${projectUrl}/encryption-keys/new?provider=aws_kms&region=eu-west-1`);
    await page.getByLabel("KMS Key ARN").fill("arn:aws:kms:eu-west-1:111122223333:alias/payments");
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.locator(".field-error[data-field='key_arn']").waitFor();
    assert.match(await page.locator(".field-error[data-field='key_arn']").textContent(), /alias ARN/);
  }, kms.env);
});
