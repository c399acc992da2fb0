import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { withConsole, signIn, gcpStandin } from "./harness.mjs";

const ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter";
const VIEWER = "roles/cloudkms.viewer";

test("an owner walks the Google Cloud wizard: the key's parts, the commands, the Terraform configuration, a failed test, then a key", async (t) => {
  const gcp = await gcpStandin();
  await withConsole(t, {}, async ({ app, page, context }) => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: app.url });
    await signIn(page, app);
    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await page.getByLabel("Project name").fill("Google payments");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();

    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/Google Cloud KMS/).check();
    await page.getByLabel("Region", { exact: true }).selectOption("us-east1");
    await page.getByRole("button", { name: "Continue" }).click();

    // Step 2: the key's parts, then the service account and the commands with copy buttons.
    await page.getByLabel("Google Cloud project ID").fill(gcp.project);
    await page.getByLabel("Key ring").fill("payments");
    await page.getByLabel("Key name prefix").fill("orders");
    await page.getByRole("button", { name: "Show commands" }).click();
    assert.equal((await page.locator("#gcp-account").textContent()).trim(), gcp.account);
    const keyId = (await page.locator("#gcp-key-id").textContent()).trim();
    assert.match(keyId, /^orders-[0-9a-f]{8}$/);
    await page.locator("[data-copy='#gcp-command-0']").click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()),
      `gcloud kms keyrings create payments --location=us-east1 --project=${gcp.project}`);
    const commands = await page.locator("pre[id^='gcp-command-']").allTextContents();
    assert.equal(commands.length, 4);
    assert.match(commands[1], new RegExp(`^gcloud kms keys create ${keyId} .*--purpose=encryption --rotation-period=90d`));
    for (const role of [ENCRYPTER, VIEWER]) {
      assert.ok(commands.some((c) => c.includes(`--member=serviceAccount:${gcp.account}`) && c.includes(`--role=${role}`)), role);
    }

    // The Terraform configuration downloads and parses, filled in.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "Download cmek-gcp.tf.json" }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "cmek-gcp.tf.json");
    const tf = JSON.parse(await readFile(await download.path(), "utf8"));
    assert.equal(tf.resource.google_kms_key_ring.cmek.location, "us-east1");
    assert.equal(tf.resource.google_kms_key_ring.cmek.name, "payments");
    assert.equal(tf.resource.google_kms_key_ring.cmek.project, gcp.project);
    assert.equal(tf.resource.google_kms_crypto_key.cmek.name, keyId);
    assert.equal(tf.resource.google_kms_crypto_key.cmek.purpose, "ENCRYPT_DECRYPT");
    assert.match(tf.resource.google_kms_crypto_key.cmek.rotation_period, /^\d+s$/);
    const members = Object.values(tf.resource.google_kms_crypto_key_iam_member);
    assert.deepEqual(members.map((m) => m.role).sort(), [ENCRYPTER, VIEWER].sort());
    assert.ok(members.every((m) => m.member === `serviceAccount:${gcp.account}`));

    // Step 4 before the key exists: the check fails with Cloud KMS's status, streamed.
    const keyName = `projects/${gcp.project}/locations/us-east1/keyRings/payments/cryptoKeys/${keyId}`;
    assert.equal(await page.locator("#key_name").inputValue(), keyName);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    const reachable = page.locator("#checklist [data-check='reachable']");
    await reachable.waitFor();
    assert.match(await reachable.getAttribute("class"), /fail/);
    assert.match(await reachable.textContent(), /PERMISSION_DENIED/);
    await page.getByText("The key did not pass every required check").waitFor();

    // The customer runs the commands (the stand-in's control API plays gcloud); created.
    const member = `serviceAccount:${gcp.account}`;
    await gcp.control("POST", "cryptoKeys", {
      project: gcp.project, location: "us-east1", keyRing: "payments", key: keyId, rotationPeriod: "7776000s",
      bindings: [{ role: ENCRYPTER, members: [member] }, { role: VIEWER, members: [member] }],
    });
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();
    const row = page.getByRole("row", { name: new RegExp(keyId) });
    assert.equal(await row.locator(".badge").textContent(), "active");
    assert.match(await row.textContent(), /Google Cloud KMS/);
  }, gcp.env);
});

test("without JavaScript, the Google Cloud wizard names a bad part inline, downloads the Terraform, then creates the key", async (t) => {
  const gcp = await gcpStandin();
  await withConsole(t, { javaScriptEnabled: false, acceptDownloads: true }, async ({ app, page }) => {
    await signIn(page, app);
    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await page.getByLabel("Project name").fill("Google without JS");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();

    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/Google Cloud KMS/).check();
    assert.equal(await page.getByText("How the platform reaches your AWS key").isVisible(), false);
    await page.getByLabel("Region", { exact: true }).selectOption("europe-west1");
    await page.getByRole("button", { name: "Continue" }).click();

    await page.getByLabel("Google Cloud project ID").fill("Bad_Project");
    await page.getByLabel("Key ring").fill("ledger");
    await page.getByLabel("Key name prefix").fill("ledger");
    await page.getByRole("button", { name: "Show commands" }).click();
    await page.locator(".field.invalid .field-error", { hasText: "project id" }).first().waitFor();

    await page.getByLabel("Google Cloud project ID").fill(gcp.project);
    await page.getByRole("button", { name: "Show commands" }).click();
    const keyId = (await page.locator("#gcp-key-id").textContent()).trim();
    assert.match(keyId, /^ledger-[0-9a-f]{8}$/);
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "Download cmek-gcp.tf.json" }).click(),
    ]);
    const tf = JSON.parse(await readFile(await download.path(), "utf8"));
    assert.equal(tf.resource.google_kms_key_ring.cmek.location, "europe-west1");
    assert.equal(tf.resource.google_kms_crypto_key.cmek.name, keyId);

    const member = `serviceAccount:${gcp.account}`;
    await gcp.control("POST", "cryptoKeys", {
      project: gcp.project, location: "europe-west1", keyRing: "ledger", key: keyId,
      protectionLevel: "HSM", bindings: [{ role: ENCRYPTER, members: [member] }, { role: VIEWER, members: [member] }],
    });
    // Test only first: the checklist shows, information items included.
    await page.getByRole("button", { name: "Test Encryption Key", exact: true }).click();
    await page.locator("#checklist").getByText("HSM: the key material never leaves Cloud HSM.").waitFor();
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();

    await page.getByRole("link", { name: "Key Status" }).first().click();
    const row = page.getByRole("row", { name: new RegExp(keyId) });
    await row.waitFor();
    assert.match(await row.textContent(), /Google Cloud KMS/);
    assert.match(await row.textContent(), /europe-west1/);
    assert.match(await row.textContent(), /active/);
    await row.getByRole("link", { name: new RegExp(keyId) }).click();
    await page.getByText("The platform's service account (IAM roles on the key)").waitFor();
  }, gcp.env);
});
