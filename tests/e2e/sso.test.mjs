import { test } from "node:test";
import assert from "node:assert/strict";
import { withConsole, signIn } from "./harness.mjs";

function oidc() {
  const issuer = process.env.CMEK_TEST_OIDC_ISSUER;
  if (!issuer) throw new Error("CMEK_TEST_OIDC_ISSUER must name the OpenID provider (scripts/test starts it)");
  return {
    CMEK_OIDC_ISSUER: issuer,
    CMEK_OIDC_CLIENT_ID: "cmek-console",
    CMEK_OIDC_CLIENT_SECRET: "cmek-console-test-secret",
  };
}

test("an owner invites a colleague, who signs in with SSO and sees the console", async (t) => {
  await withConsole(t, {}, async ({ app, page }) => {
    await signIn(page, app);
    await page.getByRole("link", { name: "Members" }).click();
    await page.getByLabel("Email").fill("grace@example.com");
    await page.getByLabel("Role", { exact: true }).selectOption("auditor");
    await page.getByRole("button", { name: "Invite" }).click();
    await page.getByRole("cell", { name: "grace@example.com" }).waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${app.url}/sign-in`);

    await page.getByRole("link", { name: "Sign in with SSO" }).click();
    // The provider's own pages: its login form, then consent.
    await page.locator("input[name=login]").fill("grace");
    await page.locator("input[name=password]").fill("any password");
    await page.locator("button[type=submit]").click();
    await page.locator("input[name=prompt][value=consent]").waitFor({ state: "attached" });
    await page.locator("button[type=submit]").click();

    await page.waitForURL(`${app.url}/projects`);
    assert.match(await page.locator(".who").textContent(), /Test grace/);
    assert.match(await page.locator(".who").textContent(), /Auditor/);
    assert.equal(await page.getByRole("link", { name: "Create New Project" }).count(), 0, "auditors create nothing");
  }, oidc());
});
