import { test } from "node:test";
import assert from "node:assert/strict";
import { withConsole, signIn } from "./harness.mjs";

test("an owner signs in with the link, creates a CMEK project and sees it listed", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    await signIn(page, app);
    assert.equal(await page.getByRole("heading", { name: "Projects", exact: true }).isVisible(), true);

    await page.getByRole("link", { name: "Create New Project" }).first().click();
    await page.getByLabel("Project name").fill("Payments EU");
    await page.getByLabel(/Customer-managed encryption keys/).check();
    await page.getByRole("button", { name: "Create" }).click();

    await page.getByText("Project created.").waitFor();
    assert.equal(await page.getByText("CMEK enabled").isVisible(), true);
    assert.equal(await page.getByRole("heading", { name: "Project Settings" }).isVisible(), true);
    assert.equal(await page.getByRole("heading", { name: "Encryption Access" }).isVisible(), true);

    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Projects" }).click();
    const row = page.getByRole("row", { name: /Payments EU/ });
    assert.equal(await row.getByText("CMEK").isVisible(), true);
  });
});

test("without JavaScript the form still works and shows its errors inline", async (t) => {
  await withConsole(t, { javaScriptEnabled: false }, async ({ app, page }) => {
    await signIn(page, app);
    await page.goto(`${app.url}/projects/new`);
    await page.getByLabel("Project name").fill("-bad");
    await page.getByRole("button", { name: "Create" }).click();

    assert.equal(await page.getByText("must start with a letter or a digit").isVisible(), true);
    assert.equal(await page.getByText("choose whether this project uses customer-managed encryption keys").isVisible(), true);
    assert.equal(await page.getByLabel("Project name").inputValue(), "-bad");

    await page.getByLabel("Project name").fill("Ledger");
    await page.getByLabel(/Platform-managed keys/).check();
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByText("Project created.").waitFor();
    assert.equal(await page.getByText("Platform-managed keys").first().isVisible(), true);
  });
});

test("a sign-in link works only once", async (t) => {
  await withConsole(t, {}, async ({ app, page, context }) => {
    await signIn(page, app);
    const other = await context.browser().newContext();
    const second = await other.newPage();
    await second.goto(app.link);
    await second.getByRole("button", { name: "Sign in" }).click();
    assert.equal(await second.getByText("This sign-in link has already been used.").isVisible(), true);
    await other.close();
  });
});

test("an owner creates an API key, copies it once, and revokes it", async (t) => {
  await withConsole(t, {}, async ({ app, page, context }) => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: app.url });
    await signIn(page, app);
    await page.getByRole("link", { name: "API Keys" }).click();
    await page.getByLabel("Name").fill("terraform");
    await page.getByLabel("Role").selectOption("member");
    await page.getByRole("button", { name: "Create" }).click();

    const secret = (await page.locator("#new-key").textContent()).trim();
    assert.match(secret, /^cmek_/);
    await page.getByRole("button", { name: "Copy" }).click();
    await page.getByRole("button", { name: "Copied" }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);

    const me = await fetch(`${app.url}/api/v1/me`, { headers: { authorization: `Bearer ${secret}` } });
    assert.equal(me.status, 200);

    page.once("dialog", (dialog) => dialog.accept());
    await page.getByRole("button", { name: "Revoke" }).click();
    await page.getByText(/Revoked/).waitFor();
    const after = await fetch(`${app.url}/api/v1/me`, { headers: { authorization: `Bearer ${secret}` } });
    assert.equal(after.status, 401);
  });
});

test("the footer leads to the API reference, drawn from the served document with nothing fetched from elsewhere", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    // Whatever the page asks of another origin, its Content-Security-Policy refuses before any
    // connection (Redoc's attribution logo is such a request): what counts is what was sent.
    const elsewhere = [];
    const local = (url) => url.startsWith(app.url) || url.startsWith("blob:") || url.startsWith("data:");
    page.on("requestfinished", (request) => {
      if (!local(request.url())) elsewhere.push(request.url());
    });
    page.on("requestfailed", (request) => {
      if (!local(request.url()) && !["csp", "net::ERR_BLOCKED_BY_CSP"].includes(request.failure()?.errorText)) {
        elsewhere.push(`${request.url()} (${request.failure()?.errorText})`);
      }
    });
    const errors = [];
    page.on("pageerror", (error) => errors.push(error.message));
    await signIn(page, app);
    await page.getByRole("contentinfo").getByRole("link", { name: "API reference" }).click();
    await page.waitForURL(`${app.url}/api/docs`);
    // Redoc has read the document: the API's title, a tag and an operation's path are drawn.
    await page.getByRole("heading", { name: /cmek-console API/ }).waitFor({ timeout: 30000 });
    await page.getByText("Encryption Access: customer-managed keys").first().waitFor();
    await page.getByText("/api/v1/projects/{project_id}/encryption-keys").first().waitFor();
    assert.deepEqual(elsewhere, []);
    assert.deepEqual(errors, []);
  });
});
