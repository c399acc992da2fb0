// Starts the real cmek-console binary on a free port with a fresh data directory, and
// Chromium through playwright-core; saves a screenshot of any page whose test fails.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, "artifacts");

export async function startConsole(extraEnv = {}) {
  const bin = process.env.CMEK_BIN;
  if (!bin) throw new Error("CMEK_BIN must name the cmek-console binary (scripts/test sets it)");
  const dataDir = mkdtempSync(join(tmpdir(), "cmek-e2e-"));
  const child = spawn(bin, [], {
    env: { ...process.env, CMEK_LISTEN: "127.0.0.1:0", CMEK_DATA_DIR: dataDir, DATABASE_URL: "", RUST_LOG: "warn", ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => { stderr += chunk; });
  const { url, link } = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`console did not start in 30 s:\n${out}\n${stderr}`)), 30_000);
    child.on("exit", (code) => reject(new Error(`console exited with ${code}:\n${stderr}`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const url = out.match(/running at (\S+)/)?.[1];
      const link = out.match(/^(http\S+\/sign-in\/link\?token=\S+)$/m)?.[1];
      if (url && link) {
        clearTimeout(timer);
        resolve({ url, link });
      }
    });
  });
  return {
    url,
    link,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    ],
  });
}

/// Runs `body` with a fresh console, browser context and page; on failure keeps a screenshot.
export async function withConsole(t, options, body, extraEnv = {}) {
  const app = await startConsole(extraEnv);
  const browser = await launchBrowser();
  const context = await browser.newContext(options);
  const page = await context.newPage();
  try {
    await body({ app, page, context });
  } catch (error) {
    mkdirSync(artifacts, { recursive: true });
    const file = join(artifacts, `${t.name.replace(/[^a-z0-9]+/gi, "-")}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\n(screenshot: ${file})`;
    throw error;
  } finally {
    await browser.close();
    await app.stop();
  }
}

export async function signIn(page, app) {
  await page.goto(app.link);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${app.url}/projects`);
}

/// moto's KMS, spoken to directly (moto does not check signatures when IAM auth is off).
export function moto() {
  const url = process.env.CMEK_TEST_MOTO_URL;
  if (!url) throw new Error("CMEK_TEST_MOTO_URL must name the moto server (scripts/test starts it)");
  async function call(region, action, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": `TrentService.${action}`,
        authorization: `AWS4-HMAC-SHA256 Credential=testing/20260101/${region}/kms/aws4_request, SignedHeaders=host, Signature=0`,
      },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${action}: ${response.status} ${await response.text()}`);
    return response.json();
  }
  return {
    env: {
      CMEK_AWS_ACCOUNT_ID: "123456789012",
      AWS_ENDPOINT_URL: url,
      AWS_ACCESS_KEY_ID: "testing",
      AWS_SECRET_ACCESS_KEY: "testing",
    },
    async createKey(region) {
      return (await call(region, "CreateKey", { KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT" })).KeyMetadata;
    },
    async disableKey(region, keyId) {
      await call(region, "DisableKey", { KeyId: keyId });
    },
  };
}
