// Starts the real cmek-console binary on a free port with a fresh data directory, and
// Chromium through playwright-core; saves a screenshot of any page whose test fails.
import { spawn } from "node:child_process";
import { createHash, createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
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
    env: { ...process.env, CMEK_LISTEN: "127.0.0.1:0", CMEK_DATA_DIR: dataDir, DATABASE_URL: "", RUST_LOG: "warn", CMEK_KEY_TEST_PROPAGATION: "0s", ...extraEnv },
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

const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const hmac = (key, data) => createHmac("sha256", key).update(data).digest();
/// Percent-encoding of everything but RFC 3986's unreserved characters, as SigV4 wants.
const strictEncode = (v) =>
  encodeURIComponent(v).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/// AWS Signature Version 4 headers for one request (every header given is signed, with
/// `host` and `x-amz-date`).
export function sigV4({ method = "POST", url, region, service, headers = {}, body = "", key, secret, now = new Date() }) {
  const target = new URL(url);
  const amzDate = now.toISOString().replace(/[-:]|\.\d{3}/g, "");
  const day = amzDate.slice(0, 8);
  const signed = { host: target.host, "x-amz-date": amzDate };
  for (const [name, value] of Object.entries(headers)) signed[name.toLowerCase()] = String(value);
  const names = Object.keys(signed).sort();
  const query = [...target.searchParams].map(([k, v]) => `${strictEncode(k)}=${strictEncode(v)}`).sort().join("&");
  const canonical = [
    method,
    target.pathname || "/",
    query,
    names.map((n) => `${n}:${signed[n].trim().replace(/\s+/g, " ")}\n`).join(""),
    names.join(";"),
    sha256(body),
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secret}`, day), region), service), "aws4_request");
  const signature = createHmac("sha256", signingKey).update(toSign).digest("hex");
  const { host: _host, ...sent } = signed; // fetch sends Host itself, from the URL
  return {
    ...sent,
    authorization: `AWS4-HMAC-SHA256 Credential=${key}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`,
  };
}

const KMS_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Action: ["kms:*"], Resource: "*" }],
});

/// moto with IAM enforced, spoken to as its administrator with signed requests: a console
/// IAM user of the test's own (so revoking it touches no other test), its grant, and keys.
export function iamMoto() {
  const need = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} must be set (scripts/test starts moto with IAM enforced)`);
    return value;
  };
  const url = need("CMEK_TEST_IAM_MOTO_URL");
  const admin = { key: need("CMEK_TEST_IAM_ADMIN_KEY"), secret: need("CMEK_TEST_IAM_ADMIN_SECRET") };

  async function iam(action, params = {}) {
    // moto checks the signature over the form as Python's urlencode writes it again from the
    // parsed fields (RFC 3986 unreserved characters only, a space as "+"), so it is encoded so.
    const body = Object.entries({ Action: action, Version: "2010-05-08", ...params })
      .map(([k, v]) => `${strictEncode(k)}=${strictEncode(v)}`.replaceAll("%20", "+"))
      .join("&");
    const headers = sigV4({
      url, region: "us-east-1", service: "iam", body, ...admin,
      headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
    });
    const response = await fetch(url, { method: "POST", headers, body });
    const text = await response.text();
    if (!response.ok) throw new Error(`IAM ${action}: ${response.status} ${text}`);
    return text;
  }
  async function kms(region, action, payload) {
    const body = JSON.stringify(payload);
    const headers = sigV4({
      url, region, service: "kms", body, ...admin,
      headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": `TrentService.${action}` },
    });
    const response = await fetch(url, { method: "POST", headers, body });
    if (!response.ok) throw new Error(`KMS ${action}: ${response.status} ${await response.text()}`);
    return response.json();
  }
  const xml = (text, tag) => {
    const value = text.match(new RegExp(`<${tag}>([^<]*)</${tag}>`))?.[1];
    if (!value) throw new Error(`no <${tag}> in ${text}`);
    return value;
  };
  const grant = (user) => iam("PutUserPolicy", { UserName: user, PolicyName: "kms", PolicyDocument: KMS_POLICY });

  return {
    url,
    /// A new IAM user allowed `kms:*` by an inline policy `kms`, with an access key.
    async createConsoleUser() {
      const user = `console-${randomUUID().replaceAll("-", "")}`;
      await iam("CreateUser", { UserName: user });
      await grant(user);
      const created = await iam("CreateAccessKey", { UserName: user });
      return { user, key: xml(created, "AccessKeyId"), secret: xml(created, "SecretAccessKey") };
    },
    grant,
    async revoke(user) {
      await iam("DeleteUserPolicy", { UserName: user, PolicyName: "kms" });
    },
    async createKey(region) {
      return (await kms(region, "CreateKey", { KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT" })).KeyMetadata;
    },
    /// The console's settings to reach this moto as `consoleKey`.
    env(consoleKey, consoleSecret) {
      return {
        CMEK_AWS_ACCOUNT_ID: "123456789012",
        AWS_ENDPOINT_URL: url,
        AWS_ACCESS_KEY_ID: consoleKey,
        AWS_SECRET_ACCESS_KEY: consoleSecret,
      };
    },
  };
}

/// A stand-in's control API under `base`: `control(method, path, body)` sends JSON and
/// answers the parsed reply, throwing on anything but 2xx.
function controlApi(base) {
  return async function control(method, path, body) {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`stand-in ${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/// The Azure Key Vault and Entra stand-in (tests/azure/standin.py, started by scripts/test,
/// which also sets NODE_EXTRA_CA_CERTS to its test CA): a platform application of the test's
/// own, a customer tenant with its service principal, and the console's settings.
export async function azureStandin() {
  const url = process.env.CMEK_TEST_AZURE_URL;
  const ca = process.env.CMEK_TEST_AZURE_CA;
  if (!url || !ca) throw new Error("CMEK_TEST_AZURE_URL and CMEK_TEST_AZURE_CA must be set (scripts/test starts the stand-in)");
  const control = controlApi(`${url}/_control`);
  const appId = randomUUID();
  const secret = `secret-${randomUUID()}`;
  const tenant = randomUUID();
  await control("POST", "/apps", { client_id: appId, client_secret: secret });
  await control("POST", "/tenants", { tenant_id: tenant, service_principals: [appId] });
  return {
    url, appId, tenant, control,
    env: {
      CMEK_AZURE_APP_ID: appId,
      CMEK_AZURE_APP_NAME: "cmek-console-e2e",
      CMEK_AZURE_CLIENT_SECRET: secret,
      AZURE_AUTHORITY_HOST: url,
      CMEK_AZURE_VAULT_URL_TEMPLATE: `${url}/{vault}`,
      CMEK_AZURE_CA_FILE: ca,
    },
  };
}

/// The Google Cloud KMS stand-in (tests/gcp/standin.py, started by scripts/test): a platform
/// service account of the test's own (its key file written to a temporary file), a customer
/// project id, and the console's settings.
export async function gcpStandin() {
  const url = process.env.CMEK_TEST_GCP_URL;
  if (!url) throw new Error("CMEK_TEST_GCP_URL must be set (scripts/test starts the stand-in)");
  const control = controlApi(`${url}/_control/`);
  const keyFile = await control("POST", "serviceAccounts", { project: "platform-e2e" });
  const dir = await mkdtemp(join(tmpdir(), "cmek-gcp-e2e-"));
  const keyPath = join(dir, "platform-key.json");
  await writeFile(keyPath, JSON.stringify(keyFile));
  return {
    url, control,
    account: keyFile.client_email,
    project: `cust-${randomUUID().replaceAll("-", "").slice(0, 10)}`,
    env: {
      CMEK_GCP_SERVICE_ACCOUNT: keyFile.client_email,
      CMEK_GCP_CREDENTIALS_FILE: keyPath,
      CMEK_GCP_KMS_ENDPOINT: url,
    },
  };
}
