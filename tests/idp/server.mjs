// A real OpenID provider (node's oidc-provider) for the asgigate auth tests, on 127.0.0.1:$PORT.
// RS256 and ES256 signing keys are generated at startup; JWT access tokens are issued through the
// client_credentials grant for two resource servers: urn:asgigate:rs (RS256) and urn:asgigate:es (ES256);
// opaque access tokens for urn:asgigate:opaque, checked through the introspection endpoint.
// With RP_URL set (a browser-login gateway's origin, e.g. http://127.0.0.1:8123), the client 'web-client'
// (secret 'web-secret') uses the authorization code flow with PKCE, refresh tokens (rotated on every use) and
// RP-initiated logout, with its redirect URIs under RP_URL; devInteractions then give the login form (any
// username, which becomes the subject) and the consent and logout confirmation pages.
// GET /test/grants counts the successful grants by type. Prints "ready <issuer>" once listening.
import { generateKeyPairSync, webcrypto } from 'node:crypto';

// Node 18 (Debian 12's nodejs) has no global WebCrypto, which oidc-provider's JOSE library expects; the
// provider is imported only after it is in place.
globalThis.crypto ??= webcrypto;
const { default: Provider } = await import('oidc-provider');

const port = Number(process.env.PORT || 4000);
const issuer = `http://127.0.0.1:${port}`;

function signingKey(kid, type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [
  signingKey('rsa-1', 'rsa', { modulusLength: 2048 }, 'RS256'),
  signingKey('ec-1', 'ec', { namedCurve: 'P-256' }, 'ES256'),
];

const RESOURCES = {
  'urn:asgigate:rs': { alg: 'RS256', scope: 'orders:read orders:write admin' },
  'urn:asgigate:es': { alg: 'ES256', scope: 'orders:read orders:write admin' },
  'urn:asgigate:opaque': { format: 'opaque', scope: 'orders:read orders:write admin' },
};

const EXTRA_CLAIMS = {
  'orders-client': { roles: ['reader'], tenant: 'acme' },
  'admin-client': { roles: ['admin', 'reader'], tenant: 'acme' },
};

const clientDefaults = {
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_post',
};

const rpUrl = process.env.RP_URL;
const webClients = rpUrl ? [{
  client_id: 'web-client',
  client_secret: 'web-secret',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [`${rpUrl}/auth/callback`],
  post_logout_redirect_uris: [`${rpUrl}/`, `${rpUrl}/signed-out`],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'openid offline_access orders:read',
}] : [];

const provider = new Provider(issuer, {
  jwks: { keys },
  scopes: ['openid', 'offline_access', 'orders:read', 'orders:write', 'admin'],
  clients: [
    { ...clientDefaults, client_id: 'orders-client', client_secret: 'orders-secret', scope: 'orders:read orders:write' },
    { ...clientDefaults, client_id: 'admin-client', client_secret: 'admin-secret', scope: 'orders:read orders:write admin' },
    // The gateway itself, calling the introspection endpoint (RFC 7662) with HTTP Basic client authentication.
    { ...clientDefaults, client_id: 'gateway', client_secret: 'gateway-secret', token_endpoint_auth_method: 'client_secret_basic' },
    ...webClients,
  ],
  // Browser clients get a refresh token without asking for offline_access, and a new one on every refresh.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  claims: { openid: ['sub'], profile: ['name'] },
  findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id, name: `User ${id}` }) }),
  features: {
    devInteractions: { enabled: Boolean(rpUrl) },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:asgigate:rs',
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        const info = RESOURCES[resource];
        if (!info) throw new Provider.errors.InvalidTarget();
        return {
          scope: info.scope,
          audience: resource,
          accessTokenTTL: Number(process.env.TOKEN_TTL || 300),
          ...(info.format === 'opaque'
            ? { accessTokenFormat: 'opaque' }
            : { accessTokenFormat: 'jwt', jwt: { sign: { alg: info.alg } } }),
        };
      },
    },
  },
  extraTokenClaims: (_ctx, token) => EXTRA_CLAIMS[token.clientId],
});

// Successful grants by type, for the tests to count refreshes at the provider: GET /test/grants.
const grants = {};
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  grants[type] = (grants[type] || 0) + 1;
});
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/grants') {
    ctx.body = grants;
    return undefined;
  }
  return next();
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
