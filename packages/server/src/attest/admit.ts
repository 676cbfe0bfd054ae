/** Admitting an attested node: its agent SVID is signed and its record written. */
import { WritError, bundleToPem, certificatesToPem } from '@writ/spiffe';
import type { AttestAnswer } from '@writ/protocol';
import type { ApiContext } from '../api/context.ts';

/** Who a node attestor says the node is, and the key it asks an SVID for. */
export interface Admission {
  readonly spiffeId: string;
  readonly nodeName: string;
  readonly attestationType: string;
  readonly selectors: readonly string[];
  /** DER SubjectPublicKeyInfo from the agent's CSR. */
  readonly spki: Buffer;
}

/** Signs the agent SVID and records the agent; a banned agent is refused. */
export async function admitAgent(ctx: ApiContext, a: Admission): Promise<AttestAnswer> {
  const existing = await ctx.store.getAgent(a.spiffeId);
  if (existing?.banned) throw new WritError('ERR_FORBIDDEN', `agent ${a.spiffeId} is banned`);
  const now = ctx.clock();
  const svid = ctx.ca.signX509Svid({ spiffeId: a.spiffeId, spki: a.spki });
  await ctx.store.upsertAgent({
    spiffeId: a.spiffeId,
    nodeName: a.nodeName,
    attestationType: a.attestationType,
    selectors: a.selectors,
    serial: svid.chain[0]!.serialHex,
    expiresAt: svid.expiresAt,
    banned: false,
    createdAt: existing?.createdAt ?? now,
    updatedAt: now,
  });
  ctx.metrics.svidsIssued.inc({ type: 'agent' });
  return {
    spiffeId: a.spiffeId,
    selectors: a.selectors,
    svid: certificatesToPem(svid.chain),
    bundle: bundleToPem(ctx.ca.bundle()),
    expiresAt: new Date(svid.expiresAt).toISOString(),
  };
}
