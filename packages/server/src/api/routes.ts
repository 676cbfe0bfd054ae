/** The admin and public HTTP API: one table of routes, each with its role and handler. */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  WritError,
  bundleToPem,
  certificatesToPem,
  formatBundleJson,
  jwkOf,
  jwtAlgorithmFor,
  keyTypeOf,
  parseBundleJson,
  parseCsr,
  parseSpiffeId,
  parseTrustDomain,
  type TrustBundle,
} from '@writ/spiffe';
import { ROLES, type Role } from '../store/types.ts';
import { VERSION } from '../version.ts';
import type { ApiContext } from './context.ts';
import {
  DEFAULT_BODY_LIMIT,
  integerParam,
  isoOrNull,
  object,
  ok,
  str,
  stringParam,
  strList,
  withField,
  type AddRoute,
  type Request,
  type Route,
} from './http.ts';
import { admittedImagesRoutes } from './admitted-images-routes.ts';
import { vulnRoutes } from './vuln-routes.ts';
import { vulnGateRoutes } from './vuln-gate-routes.ts';
import { auditRoutes } from './audit-routes.ts';
import { imageSourceRoutes } from './image-sources-routes.ts';
import { vulnerabilityRoutes } from './vulnerability-routes.ts';
import { vexRoutes } from './vex-routes.ts';
import { workloadRoutes } from './workload-routes.ts';
import { tokenRoutes } from './token-routes.ts';
import { federationRoutes } from './federation-routes.ts';
import { alertRoutes } from './alert-routes.ts';
import { agentRoutes } from './agent-routes.ts';
import { attestRoutes } from '../attest/routes.ts';
import { hashToken } from '../attest/join-token.ts';
import { policyRoutes } from './policy-routes.ts';
import { learningRoutes } from './learning-routes.ts';
import { admissionEventRoutes } from './admission-routes.ts';
import { graphRoutes } from './graph-routes.ts';
import { uiRoutes } from './ui-routes.ts';
import { ENTRY_FIELDS, MAX_JWT_TTL_MS, MAX_X509_TTL_MS, entryJson, parseDnsName, parseEntryInput, parseWorkloadId, ttlField } from './validate.ts';

export { hashToken };
export const newAdminToken = (): string => `writ_${randomBytes(32).toString('base64url')}`;
/** A prefix, so a token never starts with '-' (a command line would read it as an option) and secret scanners can spot it. */
const newJoinToken = (): string => `wjt_${randomBytes(24).toString('base64url')}`;

const NODE_NAME = /^[a-zA-Z0-9._-]{1,128}$/;
const MAX_JOIN_TOKEN_TTL_MS = 30 * 86_400_000;
const BATCH_LIMIT = 10_000;

function audienceList(o: Record<string, unknown>): string[] {
  const v = o['audience'];
  const list = typeof v === 'string' ? [v] : strList(o, 'audience', { max: 16, itemMax: 512 });
  if (!list || list.length === 0 || list.some((a) => a.length === 0))
    throw new WritError('ERR_FIELD_MISSING', 'field "audience" needs at least one non-empty value', { field: 'audience' });
  return list;
}

function federatedJson(trustDomain: string, bundle: TrustBundle, updatedAt: number): Record<string, unknown> {
  return { trustDomain, updatedAt: new Date(updatedAt).toISOString(), bundle: formatBundleJson(bundle) };
}

/** An empty route table and the `add` that fills it (the admin API's, and the admission listener's). */
export function routeTable(): { routes: Route[]; add: AddRoute } {
  const routes: Route[] = [];
  const add: AddRoute = (method, name, role, summary, handler, body, query) => {
    const pattern = new RegExp(`^${name.replace(/\{[^}]+\}/g, '([^/]+)').replace(/\./g, '\\.')}$`);
    routes.push({ method, name, pattern, role, summary, handler, body, query });
  };
  return { routes, add };
}

export function buildRoutes(ctx: ApiContext): Route[] {
  const td = ctx.trustDomain;
  const { routes, add } = routeTable();
  const ENTRY_BODY = { limit: DEFAULT_BODY_LIMIT, fields: ENTRY_FIELDS };

  // ---------------------------------------------------------------- health and metadata
  add('GET', '/livez', undefined, 'Liveness: the process is serving.', () => ok({ status: 'ok' }));
  add('GET', '/readyz', undefined, 'Readiness: the store answers and the CA can sign.', async () => {
    await ctx.ready();
    return ok({ status: 'ok' });
  });
  add('GET', '/metrics', undefined, 'Prometheus metrics.', async () => ({
    status: 200,
    body: await ctx.metrics.registry.metrics(),
    contentType: ctx.metrics.registry.contentType,
  }));

  add('GET', '/v1/version', undefined, "The server's version and trust domain.", () => ok({ version: VERSION, trustDomain: td }));
  add('GET', '/v1/whoami', 'viewer', "The calling token's role, id, name and expiry (never the token).", (req) =>
    ok({ role: req.token!.role, tokenId: req.token!.id, name: req.token!.name, expiresAt: isoOrNull(req.token!.expiresAt) }),
  );
  add('GET', '/v1/ca/authorities', 'viewer', 'The X.509 CAs and JWT keys of every server: status (prepared, active, old) and validity.', async () =>
    ok({
      authorities: (await ctx.store.listAuthorities()).map((a) => ({
        id: a.id,
        kind: a.kind,
        status: a.status,
        serverId: a.serverId,
        notBefore: new Date(a.notBefore).toISOString(),
        notAfter: new Date(a.notAfter).toISOString(),
      })),
    }),
  );

  // ---------------------------------------------------------------- bundle, federation and OIDC (public)
  add('GET', '/v1/bundle', undefined, "This trust domain's SPIFFE bundle (federation bundle endpoint, https_web profile).", () =>
    ok(formatBundleJson(ctx.ca.bundle())),
  );
  add('GET', '/.well-known/openid-configuration', undefined, 'OpenID Connect discovery for JWT-SVID verification.', () =>
    ok({
      issuer: ctx.jwtIssuer,
      jwks_uri: `${ctx.publicUrl}/keys`,
      authorization_endpoint: '',
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['ES256', 'ES384', 'RS256'],
    }),
  );
  add('GET', '/keys', undefined, 'JWKS of the JWT-SVID signing keys.', () => {
    const keys = [...ctx.ca.bundle().jwtAuthorities].map(([kid, key]) => ({ ...jwkOf(key), kid, use: 'sig', alg: jwtAlgorithmFor(keyTypeOf(key)) }));
    return ok({ keys });
  });

  // ---------------------------------------------------------------- entries
  add(
    'GET',
    '/v1/entries',
    'viewer',
    'List registration entries (filters spiffeId, parentId, selector (repeatable); pageSize, pageToken).',
    async (req) => {
      const q = req.query;
      const spiffeId = q.get('spiffeId');
      const parentId = q.get('parentId');
      if (spiffeId !== null) withField('spiffeId', () => parseSpiffeId(spiffeId));
      if (parentId !== null) withField('parentId', () => parseSpiffeId(parentId));
      const page = await ctx.store.listEntries({
        ...(spiffeId !== null ? { spiffeId } : {}),
        ...(parentId !== null ? { parentId } : {}),
        selectors: q.getAll('selector'),
        ...(q.has('pageSize') ? { pageSize: Number(q.get('pageSize')) } : {}),
        ...(q.get('pageToken') ? { pageToken: q.get('pageToken')! } : {}),
      });
      return ok({ entries: page.items.map(entryJson), ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) });
    },
    undefined,
    { spiffeId: stringParam(), parentId: stringParam(), selector: stringParam(300, true), pageSize: integerParam(1, 1000), pageToken: stringParam(512) },
  );
  add(
    'POST',
    '/v1/entries',
    'operator',
    'Create a registration entry.',
    async (req) => {
      const now = ctx.clock();
      const [e] = await ctx.store.createEntries([parseEntryInput(req.body, { trustDomain: td, now })], now);
      return ok(entryJson(e!), 201);
    },
    ENTRY_BODY,
  );
  add(
    'POST',
    '/v1/entries/batch',
    'operator',
    `Create up to ${BATCH_LIMIT} entries, all or none.`,
    async (req) => {
      const o = object(req.body);
      const list = o['entries'];
      if (!Array.isArray(list) || list.length === 0)
        throw new WritError('ERR_FIELD_INVALID', 'field "entries" must be a non-empty array', { field: 'entries' });
      if (list.length > BATCH_LIMIT) throw new WritError('ERR_FIELD_INVALID', `field "entries" has more than ${BATCH_LIMIT} items`, { field: 'entries' });
      const now = ctx.clock();
      const inputs = list.map((e, i) => parseEntryInput(e, { trustDomain: td, now, prefix: `entries[${i}].` }));
      const created = await ctx.store.createEntries(inputs, now);
      return ok({ entries: created.map(entryJson) }, 201);
    },
    { limit: 16 * DEFAULT_BODY_LIMIT, fields: ['entries'] },
  );
  const getEntry = async (req: Request) => {
    const e = await ctx.store.getEntry(req.params[0]!);
    if (!e) throw new WritError('ERR_ENTRY_NOT_FOUND', `entry ${req.params[0]!.slice(0, 64)} not found`);
    return e;
  };
  add('GET', '/v1/entries/{id}', 'viewer', 'Get one entry.', async (req) => ok(entryJson(await getEntry(req))));
  add(
    'PATCH',
    '/v1/entries/{id}',
    'operator',
    'Change the given fields of an entry.',
    async (req) => {
      const base = await getEntry(req);
      const now = ctx.clock();
      const updated = await ctx.store.updateEntry(base.id, parseEntryInput(req.body, { trustDomain: td, now, base }), now);
      return ok(entryJson(updated));
    },
    ENTRY_BODY,
  );
  add(
    'PUT',
    '/v1/entries/{id}',
    'operator',
    'Replace an entry.',
    async (req) => {
      const base = await getEntry(req);
      const now = ctx.clock();
      const updated = await ctx.store.updateEntry(base.id, parseEntryInput(req.body, { trustDomain: td, now }), now);
      return ok(entryJson(updated));
    },
    ENTRY_BODY,
  );
  add('DELETE', '/v1/entries/{id}', 'operator', 'Delete an entry.', async (req) => {
    if (!(await ctx.store.deleteEntry(req.params[0]!))) throw new WritError('ERR_ENTRY_NOT_FOUND', `entry ${req.params[0]!.slice(0, 64)} not found`);
    return { status: 204, body: '' };
  });

  // ---------------------------------------------------------------- join tokens
  add(
    'POST',
    '/v1/join-tokens',
    'operator',
    'Create a single-use join token for an agent.',
    async (req) => {
      const o = object(req.body);
      const nodeName = str(o, 'nodeName', { max: 128 }) ?? `node-${randomBytes(4).toString('hex')}`;
      if (!NODE_NAME.test(nodeName))
        throw new WritError('ERR_FIELD_INVALID', 'field "nodeName" may hold only a-z A-Z 0-9 . _ - (1 to 128 characters)', { field: 'nodeName' });
      if (nodeName === '.' || nodeName === '..') throw new WritError('ERR_FIELD_INVALID', 'field "nodeName" cannot be "." or ".."', { field: 'nodeName' });
      const ttlMs = ttlField(o, 'ttl', MAX_JOIN_TOKEN_TTL_MS) ?? 3_600_000;
      const token = newJoinToken();
      const now = ctx.clock();
      await ctx.store.createJoinToken({ hash: hashToken(token), nodeName, expiresAt: now + ttlMs, createdAt: now });
      return ok({ token, nodeName, spiffeId: `spiffe://${td}/writ/agent/${nodeName}`, expiresAt: new Date(now + ttlMs).toISOString() }, 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['nodeName', 'ttl'] },
  );

  attestRoutes(ctx, add);

  // ---------------------------------------------------------------- admin tokens
  add(
    'POST',
    '/v1/admin-tokens',
    'admin',
    'Create an API token with a role (admin, operator, viewer). The token is shown once.',
    async (req) => {
      const o = object(req.body);
      const role = str(o, 'role', { required: true, max: 16 }) as Role;
      if (!ROLES.includes(role)) throw new WritError('ERR_FIELD_INVALID', `field "role" must be one of ${ROLES.join(', ')}`, { field: 'role' });
      const name = str(o, 'name', { max: 128 }) ?? '';
      const ttlMs = ttlField(o, 'ttl', 3660 * 86_400_000);
      const token = newAdminToken();
      const now = ctx.clock();
      const rec = { id: randomUUID(), hash: hashToken(token), role, name, createdAt: now, expiresAt: ttlMs === undefined ? null : now + ttlMs };
      await ctx.store.createAdminToken(rec);
      return ok(
        {
          id: rec.id,
          token,
          role,
          name,
          createdAt: new Date(now).toISOString(),
          expiresAt: isoOrNull(rec.expiresAt),
        },
        201,
      );
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['role', 'name', 'ttl'] },
  );
  add('GET', '/v1/admin-tokens', 'admin', 'List API tokens (never the tokens themselves).', async () =>
    ok({
      adminTokens: (await ctx.store.listAdminTokens()).map((t) => ({
        id: t.id,
        role: t.role,
        name: t.name,
        createdAt: new Date(t.createdAt).toISOString(),
        expiresAt: isoOrNull(t.expiresAt),
      })),
    }),
  );
  add('DELETE', '/v1/admin-tokens/{id}', 'admin', 'Revoke an API token.', async (req) => {
    if (!(await ctx.store.deleteAdminToken(req.params[0]!))) throw new WritError('ERR_NOT_FOUND', 'admin token not found');
    return { status: 204, body: '' };
  });

  // ---------------------------------------------------------------- minting (admin; for CI systems and tests)
  add(
    'POST',
    '/v1/svids/x509',
    'admin',
    'Sign an X.509-SVID for a SPIFFE ID from a CSR (PEM). The private key stays with the caller.',
    (req) => {
      const o = object(req.body);
      const spiffeId = parseWorkloadId(str(o, 'spiffeId', { required: true })!, 'spiffeId', td);
      const csr = str(o, 'csr', { required: true, max: 32 * 1024 })!;
      const { spki } = withField('csr', () => parseCsr(csr));
      const ttlMs = ttlField(o, 'ttl', MAX_X509_TTL_MS);
      const dnsNames = (strList(o, 'dnsNames', { max: 32, itemMax: 253 }) ?? []).map((d, i) => parseDnsName(d, `dnsNames[${i}]`));
      const svid = ctx.ca.signX509Svid({ spiffeId, spki, dnsNames, ...(ttlMs ? { ttlMs } : {}) });
      ctx.metrics.svidsIssued.inc({ type: 'x509' });
      return ok(
        {
          spiffeId,
          svid: certificatesToPem(svid.chain),
          bundle: bundleToPem(ctx.ca.bundle()),
          expiresAt: new Date(svid.expiresAt).toISOString(),
        },
        201,
      );
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['spiffeId', 'csr', 'ttl', 'dnsNames'] },
  );
  add(
    'POST',
    '/v1/svids/jwt',
    'admin',
    'Mint a JWT-SVID for a SPIFFE ID and audience.',
    (req) => {
      const o = object(req.body);
      const spiffeId = parseWorkloadId(str(o, 'spiffeId', { required: true })!, 'spiffeId', td);
      const audience = audienceList(o);
      const ttlMs = ttlField(o, 'ttl', MAX_JWT_TTL_MS);
      const jwt = ctx.ca.signJwtSvid(spiffeId, audience, ttlMs);
      ctx.metrics.svidsIssued.inc({ type: 'jwt' });
      return ok({ spiffeId, token: jwt.token, expiresAt: new Date(jwt.expiresAt).toISOString() }, 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['spiffeId', 'audience', 'ttl'] },
  );

  // ---------------------------------------------------------------- federated bundles
  const tdParam = (req: Request): string => {
    const name = decodeURIComponent(req.params[0]!);
    withField('trustDomain', () => parseTrustDomain(name));
    if (name === td) throw new WritError('ERR_TRUST_DOMAIN_INVALID', `"${td}" is this server's own trust domain`, { field: 'trustDomain' });
    return name;
  };
  add('GET', '/v1/federated-bundles', 'viewer', 'List the foreign trust domain bundles this server holds.', async () => ({
    status: 200,
    body: { bundles: (await ctx.store.listFederatedBundles()).map((b) => federatedJson(b.trustDomain, parseBundleJson(b.trustDomain, b.bundle), b.updatedAt)) },
  }));
  add('GET', '/v1/federated-bundles/{trustDomain}', 'viewer', "Get a foreign trust domain's bundle.", async (req) => {
    const name = tdParam(req);
    const b = await ctx.store.getFederatedBundle(name);
    if (!b) throw new WritError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${name}"`);
    return ok(federatedJson(name, parseBundleJson(name, b.bundle), b.updatedAt));
  });
  add(
    'PUT',
    '/v1/federated-bundles/{trustDomain}',
    'admin',
    "Set a foreign trust domain's bundle (body: SPIFFE bundle JSON).",
    async (req) => {
      const name = tdParam(req);
      const bundle = parseBundleJson(name, req.body);
      const now = ctx.clock();
      await ctx.store.setFederatedBundle({ trustDomain: name, bundle: JSON.stringify(formatBundleJson(bundle)), updatedAt: now });
      return ok(federatedJson(name, bundle, now));
    },
    { limit: DEFAULT_BODY_LIMIT },
  );
  add('DELETE', '/v1/federated-bundles/{trustDomain}', 'admin', "Delete a foreign trust domain's bundle.", async (req) => {
    const name = tdParam(req);
    if (!(await ctx.store.deleteFederatedBundle(name))) throw new WritError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${name}"`);
    return { status: 204, body: '' };
  });

  agentRoutes(ctx, add);
  // Before policyRoutes: /v1/policies/proposal and /hits are not policies named so.
  learningRoutes(ctx, add);
  policyRoutes(ctx, add);
  admissionEventRoutes(ctx, add);
  admittedImagesRoutes(ctx, add);
  vulnRoutes(ctx, add);
  vulnGateRoutes(ctx, add);
  auditRoutes(ctx, add);
  imageSourceRoutes(ctx, add);
  vulnerabilityRoutes(ctx, add);
  vexRoutes(ctx, add);
  workloadRoutes(ctx, add);
  tokenRoutes(ctx, add);
  federationRoutes(ctx, add);
  alertRoutes(ctx, add);
  graphRoutes(ctx, add);
  uiRoutes(ctx, add);
  return routes;
}
