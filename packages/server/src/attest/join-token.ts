/** Join-token node attestation: a single-use secret an operator made for one node name. */
import { createHash } from 'node:crypto';
import { WritError } from '@writ/spiffe';
import type { Store } from '../store/types.ts';
import type { Admission } from './admit.ts';

/** The form the store keeps bearer secrets in (join and admin tokens): sha256, hex. */
export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

export const joinTokenAgentId = (trustDomain: string, nodeName: string): string => `spiffe://${trustDomain}/writ/agent/${nodeName}`;

/** Redeems the token (ERR_JOIN_TOKEN_INVALID / _EXPIRED / _USED) and says whom it admits. */
export async function attestJoinToken(store: Store, trustDomain: string, joinToken: string, now: number): Promise<Omit<Admission, 'spki'>> {
  const hash = hashToken(joinToken);
  // Checked before redeeming, so a banned node does not burn a token.
  const peek = await store.getAgent(joinTokenAgentId(trustDomain, (await store.peekJoinToken(hash))?.nodeName ?? ''));
  if (peek?.banned) throw new WritError('ERR_FORBIDDEN', `agent ${peek.spiffeId} is banned`);
  const { nodeName } = await store.redeemJoinToken(hash, now);
  return { spiffeId: joinTokenAgentId(trustDomain, nodeName), nodeName, attestationType: 'join_token', selectors: [`join_token:${nodeName}`] };
}
