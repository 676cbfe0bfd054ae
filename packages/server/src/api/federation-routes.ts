/** `/v1/federation`: federation relationships (issue 14) — which peers' bundles this server fetches, and how that goes. */
import { WritError, formatBundleJson, parseBundleJson, parseBundlePem, parseSpiffeId, parseTrustDomain, type TrustBundle } from '@writ/spiffe';
import { checkTrustDomain, federationStatus } from '../federation/refresher.ts';
import { FEDERATION_PROFILES, type FederationProfile, type FederationRelationship } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { DEFAULT_BODY_LIMIT, isoOrNull, object, ok, str, withField, type AddRoute, type Request } from './http.ts';

const FIELDS = ['trustDomain', 'bundleEndpointUrl', 'profile', 'endpointSpiffeId', 'bootstrapBundle'];
const MAX_URL = 2048;

/** What the API and `writ federation show` say of a relationship: the stored fields and how stale its bundle is. */
export function federationJson(rel: FederationRelationship, now: number, bundle?: { bundle: string; updatedAt: number }): Record<string, unknown> {
  const s = federationStatus(rel, now);
  let held: Record<string, unknown> | null = null;
  if (bundle) {
    const b = parseBundleJson(rel.trustDomain, bundle.bundle);
    held = { x509Authorities: b.x509Authorities.length, jwtAuthorities: b.jwtAuthorities.size, updatedAt: new Date(bundle.updatedAt).toISOString() };
  }
  return {
    trustDomain: rel.trustDomain,
    bundleEndpointUrl: rel.bundleEndpointUrl,
    profile: rel.profile,
    endpointSpiffeId: rel.endpointSpiffeId,
    createdAt: new Date(rel.createdAt).toISOString(),
    lastSuccessAt: isoOrNull(rel.lastSuccessAt),
    lastError: rel.lastError === null ? null : { code: rel.lastErrorCode, message: rel.lastError, at: isoOrNull(rel.lastErrorAt) },
    sequence: rel.sequence,
    refreshHintSeconds: rel.refreshHint,
    refreshIntervalSeconds: s.refreshIntervalMs / 1000,
    nextRefreshAt: new Date(rel.nextRefreshAt).toISOString(),
    stalenessSeconds: s.stalenessSeconds,
    stale: s.stale,
    bundle: held,
  };
}

function endpointUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new WritError('ERR_FIELD_INVALID', 'field "bundleEndpointUrl" is not a URL', { field: 'bundleEndpointUrl' });
  }
  if (u.protocol !== 'https:') throw new WritError('ERR_FIELD_INVALID', 'field "bundleEndpointUrl" must be an https:// URL', { field: 'bundleEndpointUrl' });
  // Credentials in the URL would show in every status and log line.
  if (u.username || u.password) throw new WritError('ERR_FIELD_INVALID', 'field "bundleEndpointUrl" must not hold credentials', { field: 'bundleEndpointUrl' });
  if (u.hash) throw new WritError('ERR_FIELD_INVALID', 'field "bundleEndpointUrl" must not have a #fragment', { field: 'bundleEndpointUrl' });
  return u.href;
}

/** A bootstrap bundle: SPIFFE bundle JSON (an object) or PEM CA certificates (a string). */
function bootstrapBundle(trustDomain: string, v: unknown): TrustBundle | undefined {
  if (v === undefined || v === null) return undefined;
  const bundle = withField('bootstrapBundle', () =>
    typeof v === 'string'
      ? v.trimStart().startsWith('{')
        ? parseBundleJson(trustDomain, v)
        : parseBundlePem(trustDomain, v)
      : parseBundleJson(trustDomain, v),
  );
  try {
    checkTrustDomain(trustDomain, bundle);
  } catch (err) {
    throw new WritError('ERR_FIELD_INVALID', `field "bootstrapBundle": ${(err as Error).message.replace('the endpoint served', 'it is')}`, {
      field: 'bootstrapBundle',
    });
  }
  if (bundle.x509Authorities.length === 0)
    throw new WritError('ERR_FIELD_INVALID', 'field "bootstrapBundle" has no X.509 authority to authenticate the endpoint with', { field: 'bootstrapBundle' });
  return bundle;
}

export function federationRoutes(ctx: ApiContext, add: AddRoute): void {
  const td = ctx.trustDomain;
  const tdParam = (req: Request): string => {
    const name = decodeURIComponent(req.params[0]!);
    withField('trustDomain', () => parseTrustDomain(name));
    return name;
  };
  const found = async (name: string): Promise<FederationRelationship> => {
    const rel = await ctx.store.getFederation(name);
    if (!rel) throw new WritError('ERR_FEDERATION_NOT_FOUND', `no federation relationship with trust domain "${name}"`);
    return rel;
  };
  const show = async (rel: FederationRelationship): Promise<Record<string, unknown>> =>
    federationJson(rel, ctx.clock(), await ctx.store.getFederatedBundle(rel.trustDomain));

  add(
    'POST',
    '/v1/federation',
    'admin',
    "Create a federation relationship: fetch a peer trust domain's bundle from its bundle endpoint, at its refresh hint.",
    async (req) => {
      const o = object(req.body);
      const trustDomain = str(o, 'trustDomain', { required: true, max: 255 })!;
      withField('trustDomain', () => parseTrustDomain(trustDomain));
      if (trustDomain === td) throw new WritError('ERR_TRUST_DOMAIN_INVALID', `"${td}" is this server's own trust domain`, { field: 'trustDomain' });
      const url = endpointUrl(str(o, 'bundleEndpointUrl', { required: true, max: MAX_URL })!);
      const profile = str(o, 'profile', { required: true, max: 32 })! as FederationProfile;
      if (!FEDERATION_PROFILES.includes(profile))
        throw new WritError('ERR_FIELD_INVALID', `field "profile" must be one of ${FEDERATION_PROFILES.join(', ')}`, { field: 'profile' });
      const endpointId = str(o, 'endpointSpiffeId', { max: 2048 });
      let endpointTd: string | undefined;
      if (profile === 'https_spiffe') {
        if (endpointId === undefined)
          throw new WritError('ERR_FIELD_MISSING', 'field "endpointSpiffeId" is required for the https_spiffe profile', { field: 'endpointSpiffeId' });
        endpointTd = withField('endpointSpiffeId', () => parseSpiffeId(endpointId)).trustDomain;
      } else if (endpointId !== undefined) {
        throw new WritError('ERR_FIELD_INVALID', 'field "endpointSpiffeId" is for the https_spiffe profile only', { field: 'endpointSpiffeId' });
      }
      const bootstrap = bootstrapBundle(trustDomain, o['bootstrapBundle']);
      if (profile === 'https_web' && bootstrap)
        throw new WritError('ERR_FIELD_INVALID', 'field "bootstrapBundle" is for the https_spiffe profile only (https_web trusts the Web PKI)', {
          field: 'bootstrapBundle',
        });
      // A self-serving endpoint (its SPIFFE ID in the peer's trust domain) is first authenticated with
      // the bootstrap bundle; any other with the bundle of its own trust domain (ours, or federated).
      if (endpointTd === trustDomain && !bootstrap && !(await ctx.store.getFederatedBundle(trustDomain)))
        throw new WritError('ERR_FIELD_MISSING', `field "bootstrapBundle" is required: no bundle of "${trustDomain}" is held to authenticate its endpoint`, {
          field: 'bootstrapBundle',
        });
      if (endpointTd !== undefined && endpointTd !== trustDomain && bootstrap)
        throw new WritError(
          'ERR_FIELD_INVALID',
          `field "bootstrapBundle" is for a self-serving endpoint; ${endpointId} is authenticated with the bundle of ${endpointTd}`,
          {
            field: 'bootstrapBundle',
          },
        );
      const now = ctx.clock();
      const rel: FederationRelationship = {
        trustDomain,
        bundleEndpointUrl: url,
        profile,
        endpointSpiffeId: endpointId ?? null,
        createdAt: now,
        lastSuccessAt: null,
        lastError: null,
        lastErrorCode: null,
        lastErrorAt: null,
        sequence: null,
        refreshHint: null,
        nextRefreshAt: now,
      };
      await ctx.store.createFederation(rel);
      if (bootstrap) await ctx.store.setFederatedBundle({ trustDomain, bundle: JSON.stringify(formatBundleJson(bootstrap)), updatedAt: now });
      // The first fetch starts now; its outcome shows in `show` and `status`.
      void ctx.federation?.refresh(trustDomain).catch(() => undefined);
      return ok(await show(rel), 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: FIELDS },
  );
  add(
    'GET',
    '/v1/federation',
    'viewer',
    'List federation relationships with their status (sequence, last success, last error, next refresh, staleness).',
    async () => ok({ relationships: await Promise.all((await ctx.store.listFederations()).map(show)) }),
  );
  add('GET', '/v1/federation/{trustDomain}', 'viewer', 'One federation relationship and its status.', async (req) => ok(await show(await found(tdParam(req)))));
  add(
    'POST',
    '/v1/federation/{trustDomain}/refresh',
    'operator',
    "Fetch the peer's bundle now; a failure answers the reason (502/504) and the last good bundle stays.",
    async (req) => {
      const name = tdParam(req);
      await found(name);
      if (!ctx.federation) throw new WritError('ERR_CONFLICT', 'federation refresh is not running on this server');
      return ok(await show(await ctx.federation.refresh(name)));
    },
  );
  add(
    'DELETE',
    '/v1/federation/{trustDomain}',
    'admin',
    "End a federation relationship: stop fetching and drop the peer's bundle (agents drop it too).",
    async (req) => {
      const name = tdParam(req);
      if (!(await ctx.store.deleteFederation(name))) throw new WritError('ERR_FEDERATION_NOT_FOUND', `no federation relationship with trust domain "${name}"`);
      // SPIFFE_Federation.md 6.3: terminating a relationship is deleting the local copy of the bundle.
      await ctx.store.deleteFederatedBundle(name);
      return { status: 204, body: '' };
    },
  );
}
