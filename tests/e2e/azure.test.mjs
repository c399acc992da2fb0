import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { withConsole, signIn, azureStandin } from "./harness.mjs";

test("an owner walks the Azure wizard: service principal, full key name, ARM template, a failed test, then a key", async (t) => {
  const azure = await azureStandin();
  const vault = `v${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await azure.control("POST", "/vaults", { name: vault, tenant_id: azure.tenant, region: "eastus", purge_protection: true });

  await withConsole(t, {}, async ({ app, page, context }) => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: app.url });
    await signIn(page, app);
    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await page.getByLabel("Project name").fill("Azure payments");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();

    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/Azure Key Vault/).check();
    await page.getByLabel("Region", { exact: true }).selectOption("eastus");
    await page.getByRole("button", { name: "Continue" }).click();

    // Step 2: the platform's Entra application and the commands, with copy buttons.
    assert.equal((await page.locator("#azure-app-id").textContent()).trim(), azure.appId);
    assert.equal((await page.locator("#azure-app-name").textContent()).trim(), "cmek-console-e2e");
    await page.locator("[data-copy='#sp-create']").click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `az ad sp create --id ${azure.appId}`);
    assert.equal((await page.locator("#sp-show").textContent()).trim(), `az ad sp show --id ${azure.appId} --query id -o tsv`);

    // Step 3: the vault name and prefix; the console shows the full key name to copy.
    await page.getByLabel("Key Vault name").first().fill(vault);
    await page.getByLabel("Key name prefix").fill("orders");
    await page.getByRole("button", { name: "Show full key name" }).click();
    const keyName = (await page.locator("#full-key-name").textContent()).trim();
    assert.match(keyName, /^orders-[0-9a-f]{8}$/);
    await page.getByText("Purge protection is enabled on the Key Vault.").waitFor();

    // The ARM template downloads, parses and creates the vault, the key and the role assignment.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: /Download CMEK-KEY-VAULT-TEMPLATE\.JSON/ }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "CMEK-KEY-VAULT-TEMPLATE.JSON");
    const template = JSON.parse(await readFile(await download.path(), "utf8"));
    assert.match(template.$schema, /deploymentTemplate\.json/);
    assert.deepEqual(template.resources.map((r) => r.type), [
      "Microsoft.KeyVault/vaults", "Microsoft.KeyVault/vaults/keys", "Microsoft.Authorization/roleAssignments",
    ]);
    assert.equal(template.resources[0].properties.enablePurgeProtection, true);
    assert.equal(template.resources[0].properties.enableRbacAuthorization, true);
    assert.equal(template.resources[1].properties.kty, "RSA");
    assert.equal(template.parameters.keyName.defaultValue, keyName);
    assert.equal(template.parameters.location.defaultValue, "eastus");

    // Step 4 before the key exists in the vault: the check fails with Key Vault's code.
    assert.equal(await page.locator("#key_name").inputValue(), keyName);
    assert.equal(await page.locator("#vault_name").inputValue(), vault);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    const reachable = page.locator("#checklist [data-check='reachable']");
    await reachable.waitFor();
    assert.match(await reachable.getAttribute("class"), /fail/);
    assert.match(await reachable.textContent(), /KeyNotFound/);
    await page.getByText("The key did not pass every required check").waitFor();

    // The customer creates the key under the full name and grants the role; now it is created.
    await azure.control("POST", `/vaults/${vault}/keys`, {
      name: keyName, kty: "RSA", size: 3072, key_ops: ["wrapKey", "unwrapKey"], enabled: true, grants: [azure.appId],
    });
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();
    const row = page.getByRole("row", { name: new RegExp(keyName) });
    assert.equal(await row.locator(".badge").textContent(), "active");
  }, azure.env);
});

test("without JavaScript, the Azure wizard names a bad vault name inline, then creates the key, which Key Status shows", async (t) => {
  const azure = await azureStandin();
  const vault = `v${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await azure.control("POST", "/vaults", { name: vault, tenant_id: azure.tenant, region: "westeurope", purge_protection: true });

  await withConsole(t, { javaScriptEnabled: false }, async ({ app, page }) => {
    await signIn(page, app);
    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await page.getByLabel("Project name").fill("Azure without JS");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();

    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await page.getByLabel(/Azure Key Vault/).check();
    // AWS's access choices are hidden once another service is chosen (CSS only).
    assert.equal(await page.getByText("How the platform reaches your AWS key").isVisible(), false);
    await page.getByLabel("Region", { exact: true }).selectOption("westeurope");
    await page.getByRole("button", { name: "Continue" }).click();

    await page.getByLabel("Key Vault name").first().fill("1bad--vault");
    await page.getByLabel("Key name prefix").fill("ledger");
    await page.getByRole("button", { name: "Show full key name" }).click();
    await page.locator(".field.invalid .field-error", { hasText: "must start with a letter" }).first().waitFor();

    await page.getByLabel("Key Vault name").first().fill(vault);
    await page.getByRole("button", { name: "Show full key name" }).click();
    const keyName = (await page.locator("#full-key-name").textContent()).trim();
    assert.match(keyName, /^ledger-[0-9a-f]{8}$/);
    await azure.control("POST", `/vaults/${vault}/keys`, {
      name: keyName, kty: "RSA-HSM", size: 2048, key_ops: ["wrapKey", "unwrapKey"], enabled: true, grants: [azure.appId],
    });
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();

    await page.getByRole("link", { name: "Key Status" }).first().click();
    const row = page.getByRole("row", { name: new RegExp(keyName) });
    await row.waitFor();
    assert.match(await row.textContent(), /Azure Key Vault/);
    assert.match(await row.textContent(), /westeurope/);
    assert.match(await row.textContent(), /active/);

    // The key's own page says how the platform reaches it.
    await row.getByRole("link", { name: new RegExp(keyName) }).click();
    await page.getByText("Service principal of the platform's application").waitFor();
    assert.equal((await page.locator("#key-ref").textContent()).trim(), `${vault}/${keyName}`);
  }, azure.env);
});
