// Clusters in the browser, with the built-in Local KMS (no cloud account): a CMEK project
// with a local key, a cluster, an object uploaded, the cluster paused and resumed, and the
// object downloaded byte for byte; a cluster without CMEK and without JavaScript; and the
// inline refusal for a region without a key.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withConsole, signIn } from "./harness.mjs";

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/// Creates a project from the projects list; returns the project page's URL (no query).
async function createProject(page, name, { cmek }) {
  await page.getByRole("link", { name: "Create New Project" }).first().click();
  await page.getByLabel("Project name").fill(name);
  await page.getByLabel(cmek ? /Customer-managed encryption keys/ : /Platform-managed keys/).check();
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByText("Project created.").waitFor();
  return page.url().split("?")[0];
}

/// Creates a key on the Local KMS page; returns its id.
async function createLocalKey(page, name) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Local KMS" }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByRole("button", { name: "Create key" }).click();
  const cell = page.getByRole("row", { name: new RegExp(name) }).locator("code");
  await cell.waitFor();
  const id = (await cell.textContent()).trim();
  assert.match(id, new RegExp(`^${UUID.source}$`));
  return id;
}

/// The project's encryption key for `region`, through the wizard with the Local KMS.
async function createLocalEncryptionKey(page, projectUrl, localKeyId, region) {
  await page.goto(projectUrl);
  await page.getByRole("link", { name: "Create Encryption Key" }).click();
  await page.getByLabel(/Local KMS/).check();
  await page.getByLabel("Region", { exact: true }).selectOption(region);
  await page.getByRole("button", { name: "Continue" }).click();
  await page.getByLabel("Local key").selectOption(localKeyId);
  await page.getByRole("button", { name: "Test Encryption Key and Create" }).click();
  await page.getByText("Encryption key created").waitFor();
}

/// Opens the project's Create Cluster form from its Clusters section.
async function openClusterForm(page, projectUrl) {
  await page.goto(projectUrl);
  assert.equal(await page.getByRole("heading", { name: "Clusters", exact: true }).isVisible(), true);
  await page.getByRole("link", { name: "Create Cluster" }).click();
  await page.waitForURL(`${projectUrl}/clusters/new`);
}

async function fillClusterForm(page, { name, provider, region, tier }) {
  await page.getByLabel("Cluster name").fill(name);
  await page.getByLabel("Cloud provider").selectOption(provider);
  await page.getByLabel("Region", { exact: true }).selectOption(region);
  await page.getByLabel("Tier").selectOption(tier);
}

/// Waits for a cluster page after Create Cluster; returns the cluster's id.
async function landOnCluster(page, app, name) {
  await page.waitForURL(new RegExp(`^${app.url}/clusters/${UUID.source}\\?created=1$`));
  const id = page.url().match(UUID)[0];
  await page.getByText("Cluster created.").waitFor();
  assert.equal((await page.locator("h1").textContent()).trim(), name);
  assert.equal((await page.locator("#state").textContent()).trim(), "available");
  return id;
}

test("an owner creates a cluster with a local key, uploads a file, pauses, resumes and downloads it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "cmek-e2e-upload-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Several 64 KiB segments and a short last one.
  const bytes = randomBytes(5 * 64 * 1024 + 12_345);
  const file = join(dir, "q1.bin");
  writeFileSync(file, bytes);

  await withConsole(t, {}, async ({ app, page }) => {
    // Pause (and any other form with data-confirm) asks first: say yes to every dialog.
    page.on("dialog", (dialog) => dialog.accept());
    await signIn(page, app);
    const projectUrl = await createProject(page, "Analytics", { cmek: true });
    const localKeyId = await createLocalKey(page, "dev key");
    await createLocalEncryptionKey(page, projectUrl, localKeyId, "us-east-1");

    // A region without a key: refused on the form itself, naming the region, with the way out.
    await openClusterForm(page, projectUrl);
    await fillClusterForm(page, { name: "orders-eu", provider: "local", region: "eu-central-1", tier: "dedicated" });
    const [refused] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST"),
      page.getByRole("button", { name: "Create Cluster" }).click(),
    ]);
    assert.ok(refused.status() >= 400 && refused.status() < 500, `status ${refused.status()}`);
    // (The region's <option> names it too, hidden in the closed select: visible text only.)
    const message = page.getByText(/eu-central-1/).filter({ visible: true });
    await message.first().waitFor();
    const wayOut = message.getByRole("link", { name: "Create Encryption Key" });
    assert.equal(await wayOut.count(), 1);
    const target = new URL(await wayOut.getAttribute("href"), app.url);
    assert.equal(target.pathname, `${new URL(projectUrl).pathname}/encryption-keys/new`);
    assert.equal(target.searchParams.get("provider"), "local");
    assert.equal(target.searchParams.get("region"), "eu-central-1");
    assert.doesNotMatch(page.url(), /\/clusters\/[0-9a-f-]{36}/);
    assert.equal(await page.getByLabel("Cluster name").inputValue(), "orders-eu");
    assert.equal(await page.getByRole("button", { name: "Create Cluster" }).isVisible(), true);

    // The region with a key: created.
    await openClusterForm(page, projectUrl);
    const values = (label) => page.getByLabel(label).locator("option").evaluateAll((os) => os.map((o) => o.value));
    // A CMEK project with only local keys: only the local provider is offered.
    assert.deepEqual(await values("Cloud provider"), ["local"]);
    assert.deepEqual(await values("Tier"), ["dedicated", "serverless"]);
    await fillClusterForm(page, { name: "orders", provider: "local", region: "us-east-1", tier: "dedicated" });
    assert.equal(await page.getByLabel("Second region (optional)").inputValue(), "");
    assert.equal(await page.getByLabel("Third region (optional)").inputValue(), "");
    assert.equal(await page.getByLabel("Dual-region backup").isChecked(), false);
    await page.getByRole("button", { name: "Create Cluster" }).click();
    await landOnCluster(page, app, "orders");

    // Upload, under a name with a slash.
    await page.getByLabel("Object name (optional)").fill("reports/q1.bin");
    await page.getByLabel("File", { exact: true }).setInputFiles(file);
    await page.getByRole("button", { name: "Upload" }).click();
    await page.getByText("Object uploaded.").waitFor();
    const row = page.getByRole("row", { name: /reports\/q1\.bin/ });
    assert.equal(await row.getByRole("link", { name: "Download" }).isVisible(), true);

    // Paused: the data is not offered.
    await page.getByRole("button", { name: "Pause" }).click();
    await page.getByText("Cluster paused.").waitFor();
    assert.equal((await page.locator("#state").textContent()).trim(), "paused");
    assert.equal(await page.getByRole("link", { name: "Download" }).count(), 0);

    // Resumed: downloaded, the same bytes.
    await page.getByRole("button", { name: "Resume" }).click();
    await page.getByText("Cluster resumed.").waitFor();
    assert.equal((await page.locator("#state").textContent()).trim(), "available");
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("row", { name: /reports\/q1\.bin/ }).getByRole("link", { name: "Download" }).click(),
    ]);
    assert.match(download.suggestedFilename(), /q1\.bin$/);
    const got = await readFile(await download.path());
    assert.equal(got.length, bytes.length);
    assert.ok(got.equals(bytes), "the downloaded bytes differ from the uploaded ones");
  });
});

test("without JavaScript, a project without CMEK gets a serverless local cluster", async (t) => {
  await withConsole(t, { javaScriptEnabled: false }, async ({ app, page }) => {
    await signIn(page, app);
    const projectUrl = await createProject(page, "Sandbox", { cmek: false });
    await openClusterForm(page, projectUrl);
    await fillClusterForm(page, { name: "scratch", provider: "local", region: "eu-west-1", tier: "serverless" });
    await page.getByRole("button", { name: "Create Cluster" }).click();
    await landOnCluster(page, app, "scratch");
  });
});

test("a new user's walk: a Local KMS key, then Create Cluster with the form's defaults succeeds", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    await signIn(page, app);
    const projectUrl = await createProject(page, "First steps", { cmek: true });
    const localKeyId = await createLocalKey(page, "first key");
    await createLocalEncryptionKey(page, projectUrl, localKeyId, "ap-south-1");

    await openClusterForm(page, projectUrl);
    // The form starts where the project's only key points: its provider and its region, and
    // offers only the providers the project has keys for.
    assert.equal(await page.getByLabel("Cloud provider").inputValue(), "local");
    const offered = await page.getByLabel("Cloud provider").locator("option").allTextContents();
    assert.deepEqual(offered, ["Local (development)"]);
    assert.equal(await page.getByLabel("Region", { exact: true }).inputValue(), "ap-south-1");
    // What a CMEK project forbids is shown, disabled, with the reason.
    assert.equal(await page.getByLabel("Dual-region backup").isDisabled(), true);
    assert.equal(await page.getByText("Not available in CMEK projects").isVisible(), true);
    assert.equal(await page.getByRole("option", { name: /Serverless/ }).isDisabled(), true);

    await page.getByLabel("Cluster name").fill("first");
    await page.getByRole("button", { name: "Create Cluster" }).click();
    await page.getByText("Cluster created").waitFor();
    assert.equal(await page.getByText("ap-south-1").first().isVisible(), true);
  });
});

test("after a refusal only the select at fault is marked; the optional ones stay clean", async (t) => {
  await withConsole(t, { javaScriptEnabled: false }, async ({ app, page }) => {
    await signIn(page, app);
    const projectUrl = await createProject(page, "Marked", { cmek: true });
    const localKeyId = await createLocalKey(page, "marked key");
    await createLocalEncryptionKey(page, projectUrl, localKeyId, "us-east-1");
    await openClusterForm(page, projectUrl);
    await page.getByLabel("Cluster name").fill("-bad name");
    await page.getByRole("button", { name: "Create Cluster" }).click();
    await page.getByText("Please correct the fields marked below.").waitFor();
    for (const optional of ["Second region (optional)", "Third region (optional)"]) {
      assert.equal(await page.getByLabel(optional).getAttribute("aria-invalid"), null, optional);
      const border = await page.getByLabel(optional).evaluate((e) => getComputedStyle(e).borderColor);
      const name = await page.getByLabel("Cluster name").evaluate((e) => getComputedStyle(e).borderColor);
      assert.notEqual(border, name, `${optional} is drawn like the invalid name field`);
    }
  });
});
