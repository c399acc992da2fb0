// A real OpenID Connect provider for the sign-in tests: npm oidc-provider with one
// confidential client that must use PKCE (S256). It is registered as a native application
// so the loopback redirect URI http://127.0.0.1/sign-in/sso/callback matches any port
// (RFC 8252), which is how each test's console, on its own port, can sign in.
// The dev login form accepts any login name and password; the login name becomes the
// subject, and also names the claims:
//   "ada"            -> email ada@example.com, verified
//   "unverified-bob" -> email unverified-bob@example.com, not verified
//   "x@corp.test"    -> email x@corp.test, verified
// Usage: node provider.mjs PORT   (prints "listening" once ready)
import Provider from "oidc-provider";

const port = Number(process.argv[2] || 0);
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  clients: [{
    client_id: "cmek-console",
    client_secret: "cmek-console-test-secret",
    application_type: "native",
    redirect_uris: ["http://127.0.0.1/sign-in/sso/callback"],
    post_logout_redirect_uris: ["http://127.0.0.1/sign-in"],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }, {
    // Another application at the same provider: its codes and tokens are not the console's.
    client_id: "other-client",
    client_secret: "other-client-secret",
    application_type: "native",
    redirect_uris: ["http://127.0.0.1/sign-in/sso/callback"],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  pkce: { required: () => true, methods: ["S256"] },
  features: { devInteractions: { enabled: true } },
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  cookies: { keys: ["cmek-console-test-cookie-key"] },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60 },
  async findAccount(_ctx, id) {
    const email = id.includes("@") ? id : `${id}@example.com`;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email, email_verified: !id.startsWith("unverified"), name: `Test ${id}` };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
// The console is a confidential native client on loopback over plain http: allowed for tests.
provider.proxy = false;
const server = provider.listen(port, "127.0.0.1", () => console.log("listening"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
