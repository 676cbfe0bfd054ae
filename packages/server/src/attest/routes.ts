/** The node attestation routes: unauthenticated TLS, the node proves itself with what it holds. */
import { WritError, parseCsr } from '@writ/spiffe';
import { AGENT_PATHS, REQUEST_FIELDS, type JoinTokenAttestRequest, type PsatAttestRequest } from '@writ/protocol';
import type { ApiContext } from '../api/context.ts';
import { DEFAULT_BODY_LIMIT, object, ok, str, withField, type AddRoute } from '../api/http.ts';
import { admitAgent } from './admit.ts';
import { attestJoinToken } from './join-token.ts';

const csrKey = (csr: string): Buffer => withField('csr', () => parseCsr(csr)).spki;

export function attestRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'POST',
    AGENT_PATHS.attestJoinToken,
    undefined,
    'Redeem a join token (single use) with a CSR; returns the agent SVID spiffe://TD/writ/agent/NODE.',
    async (req) => {
      const o = object(req.body);
      const r: JoinTokenAttestRequest = {
        joinToken: str(o, 'joinToken', { required: true, max: 256 })!,
        csr: str(o, 'csr', { required: true, max: 32 * 1024 })!,
      };
      const spki = csrKey(r.csr);
      const who = await attestJoinToken(ctx.store, ctx.trustDomain, r.joinToken, ctx.clock());
      return ok(await admitAgent(ctx, { ...who, spki }), 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: REQUEST_FIELDS.attestJoinToken },
    {},
  );
  add(
    'POST',
    AGENT_PATHS.attestPsat,
    undefined,
    'Attest with a Kubernetes projected service account token; returns the agent SVID spiffe://TD/writ/agent/k8s_psat/CLUSTER/NODE.',
    async (req) => {
      const o = object(req.body);
      const r: PsatAttestRequest = {
        cluster: str(o, 'cluster', { required: true, max: 253 })!,
        token: str(o, 'token', { required: true, max: 16 * 1024 })!,
        csr: str(o, 'csr', { required: true, max: 32 * 1024 })!,
      };
      const spki = csrKey(r.csr);
      if (!ctx.psat) throw new WritError('ERR_UNAUTHENTICATED', 'k8s_psat node attestation is not configured on this server');
      const p = await ctx.psat.attest(r.cluster, r.token);
      return ok(
        await admitAgent(ctx, {
          spiffeId: `spiffe://${ctx.trustDomain}/writ/agent/${p.agentPath}`,
          nodeName: p.nodeName,
          attestationType: 'k8s_psat',
          selectors: p.selectors,
          spki,
        }),
        201,
      );
    },
    { limit: DEFAULT_BODY_LIMIT, fields: REQUEST_FIELDS.attestPsat },
    {},
  );
}
