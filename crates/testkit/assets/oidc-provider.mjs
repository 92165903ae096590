// A real OpenID provider for tests (the npm package `oidc-provider`, dev interactions).
// argv: <path of oidc-provider's lib/index.js>; env K8SHELL_OIDC: JSON
// { clientId, clientSecret, redirectUris: [...], accounts: { "<login>": { claims } }, host? }.
// Listens on a free port of `host` (default 127.0.0.1) and prints "READY <port>".
import http from 'node:http';

const { default: Provider } = await import(process.argv[2]);
const setup = JSON.parse(process.env.K8SHELL_OIDC);

const server = http.createServer();
const host = setup.host || '127.0.0.1';
await new Promise((resolve) => server.listen(0, host, resolve));
const { port } = server.address();

const provider = new Provider(`http://${host}:${port}`, {
  clients: [{
    client_id: setup.clientId,
    client_secret: setup.clientSecret,
    redirect_uris: setup.redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, sub) {
    const claims = setup.accounts[sub];
    if (!claims) return undefined;
    return { accountId: sub, async claims() { return { sub, ...claims }; } };
  },
});
provider.proxy = false;
server.on('request', provider.callback());
console.log(`READY ${port}`);
