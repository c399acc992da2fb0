// Every page of the console, checked with axe-core (Deque's accessibility engine, npm
// axe-core pinned in package-lock.json) in Chromium: no violation at all, of any impact. The
// walk fills the console first (a CMEK project, a Local KMS key, an encryption key, a cluster
// with an object, a backup, a webhook, an API key) so tables have rows and pages their real
// content, and checks error states too (a form refused, a page not found).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { withConsole, signIn } from "./harness.mjs";

const axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/// Runs axe on the page as it stands; returns its violations, one line each.
async function violations(page) {
  // Evaluated through the DevTools protocol, so the page's Content-Security-Policy (scripts
  // from the console only) does not apply to the checker itself.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  return result.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`,
  );
}

test("every page passes axe-core with no violation", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    const found = {};
    const check = async (name) => {
      await page.waitForLoadState("load");
      const list = await violations(page);
      if (list.length) found[name] = list;
    };

    await page.goto(`${app.url}/sign-in`);
    await check("sign-in");
    await signIn(page, app);
    await check("projects (empty)");

    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await check("new project");
    await page.getByRole("button", { name: "Create" }).click();
    await check("new project, refused");
    await page.getByLabel("Project name").fill("Accessible");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();
    const projectUrl = page.url().split("?")[0];
    await check("project");

    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Local KMS" }).click();
    await page.getByLabel("Name").fill("a11y key");
    await page.getByRole("button", { name: "Create key" }).click();
    const localKeyId = (await page.getByRole("row", { name: /a11y key/ }).locator("code").textContent()).trim();
    await check("local KMS");

    await page.goto(projectUrl);
    await page.getByRole("link", { name: "Create Encryption Key" }).click();
    await check("encryption key wizard");
    await page.getByLabel(/Local KMS/).check();
    await page.getByLabel("Region", { exact: true }).selectOption("us-east-1");
    await page.getByRole("button", { name: "Continue" }).click();
    await check("encryption key wizard, local");
    await page.getByLabel("Local key").selectOption(localKeyId);
    await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
    await page.getByText("Encryption key created").waitFor();
    await check("encryption key created");

    await page.goto(`${projectUrl}/encryption-keys/new?provider=aws_kms`);
    await check("AWS wizard");
    await page.goto(`${projectUrl}/encryption-keys/new?provider=azure_key_vault`);
    await check("Azure wizard");
    await page.goto(`${projectUrl}/encryption-keys/aws-policy-check?region=us-east-1`);
    await check("check my key policy");
    await page.getByLabel("Key policy, or the role's trust policy").fill('{"Statement": [');
    await page.getByRole("button", { name: "Check my key policy" }).click();
    await page.getByRole("heading", { name: "Check my key policy" }).waitFor();
    await check("check my key policy, answered");

    await page.goto(`${projectUrl}/clusters/new`);
    await check("new cluster");
    await page.getByLabel("Cluster name").fill("accessible");
    await page.getByRole("button", { name: "Create Cluster" }).click();
    await page.getByText("Cluster created").waitFor();
    const clusterUrl = page.url().split("?")[0];
    await check("cluster");
    await page.getByRole("button", { name: "Take backup" }).click();
    // The page follows the backup's job (it reloads itself while one runs).
    await page.locator("#backups .badge.state-available").waitFor();
    await page.goto(clusterUrl);
    await check("cluster with a backup");

    await page.goto(`${app.url}/key-status`);
    await check("key status");
    await page.locator('main a[href*="/encryption-keys/"]:not([href$="/new"])').first().click();
    await page.waitForURL(/\/encryption-keys\/[0-9a-f-]{36}$/);
    await check("key page");
    await page.goto(`${app.url}/audit`);
    await check("audit log");
    await page.goto(`${app.url}/alerts`);
    await check("alerts");
    await page.getByLabel("Endpoint URL").fill("https://alerts.example.com/hook");
    await page.getByRole("button", { name: "Add webhook" }).click();
    await page.getByText("alerts.example.com").first().waitFor();
    await check("alerts, a webhook and its secret");
    await page.goto(`${app.url}/members`);
    await check("members");
    await page.goto(`${app.url}/api-keys`);
    await check("API keys");
    await page.getByLabel("Name").fill("ci");
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("row", { name: /ci/ }).first().waitFor();
    await check("API keys, a key and its secret");
    await page.goto(`${app.url}/problems`);
    await check("problem types");
    await page.goto(`${app.url}/projects/00000000-0000-0000-0000-000000000000`);
    await check("not found");
    await page.goto(`${app.url}/projects`);
    await check("projects");

    assert.deepEqual(found, {}, JSON.stringify(found, null, 2));
  });
});
