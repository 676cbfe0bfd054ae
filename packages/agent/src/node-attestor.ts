/**
 * Node attestation: proves this node to the server with a join token or a Kubernetes projected
 * service account token, and takes the agent SVID it answers with only once it is checked.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { WritError, type TrustBundle } from '@writ/spiffe';
import { AGENT_PATHS, decodeAttestAnswer, type AttestAnswer, type JoinTokenAttestRequest, type PsatAttestRequest } from '@writ/protocol';
import { csrFor, generateKey, keyPem } from './keys.ts';
import type { ServerApi } from './server-client.ts';
import { checkSvidAnswer } from './svid-check.ts';

export interface NodeAttestorOptions {
  readonly joinToken?: string | undefined;
  readonly psat?: { readonly cluster: string; readonly tokenFile: string } | undefined;
}

/** A new agent identity: what the server issued, for the key generated here. */
export interface NodeIdentity {
  readonly spiffeId: string;
  readonly svidPem: string;
  readonly keyPem: string;
  readonly method: 'join_token' | 'k8s_psat';
  readonly joinTokenSha256?: string;
}

/** SHA-256 of a join token (hex): what the agent remembers of the token it attested with. */
export const tokenSha256 = (token: string): string => createHash('sha256').update(token).digest('hex');

/**
 * Attests once. The client must be configured without an identity (attestation presents no
 * client certificate) and pinned to the server's SPIFFE ID. `bundle` is what the answer's SVID
 * must chain to; it must name `spiffe://TD/writ/agent/...` and be for the key generated here.
 */
export async function attestNode(client: ServerApi, o: NodeAttestorOptions, bundle: TrustBundle, now: number): Promise<NodeIdentity> {
  const k = generateKey();
  let raw: unknown;
  let method: NodeIdentity['method'];
  if (o.psat) {
    let token: string;
    try {
      token = readFileSync(o.psat.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new WritError('ERR_CONFIG_INVALID', `cannot read the projected service account token ${o.psat.tokenFile}: ${(err as NodeJS.ErrnoException).code}`, {
        field: 'psatTokenFile',
      });
    }
    method = 'k8s_psat';
    raw = await client.call('POST', AGENT_PATHS.attestPsat, { cluster: o.psat.cluster, token, csr: csrFor(k) } satisfies PsatAttestRequest);
  } else {
    if (!o.joinToken)
      throw new WritError(
        'ERR_CONFIG_INVALID',
        'the agent has no valid identity: give it a join token (--join-token; writ token create makes one), or use k8s_psat attestation',
        { field: 'joinToken' },
      );
    method = 'join_token';
    raw = await client.call('POST', AGENT_PATHS.attestJoinToken, { joinToken: o.joinToken, csr: csrFor(k) } satisfies JoinTokenAttestRequest);
  }
  const res: AttestAnswer = decodeAttestAnswer(raw);
  const prefix = `spiffe://${bundle.trustDomain}/writ/agent/`;
  const { spiffeId } = res;
  if (!spiffeId.startsWith(prefix)) throw new WritError('ERR_REQUEST_FAILED', `the server's attestation answer was refused: spiffeId is not ${prefix}...`);
  checkSvidAnswer(res.svid, { bundle, key: k.pub, expected: (id) => id === spiffeId, wanted: spiffeId, now, what: 'attestation' });
  return {
    spiffeId,
    svidPem: res.svid,
    keyPem: keyPem(k.key),
    method,
    ...(method === 'join_token' ? { joinTokenSha256: tokenSha256(o.joinToken!) } : {}),
  };
}
