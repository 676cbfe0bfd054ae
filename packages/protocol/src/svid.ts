/**
 * Node attestation, the agent's own renewal, and the SVIDs it has signed for its entries. Keys
 * never travel: every request carries a CSR (PEM) for a key the agent generated.
 */
import { isObject, isStrings, isTime, refuse } from './check.ts';

/** `POST /v1/agent/attest/join-token`: redeem a single-use join token. */
export interface JoinTokenAttestRequest {
  readonly joinToken: string;
  readonly csr: string;
}

/** `POST /v1/agent/attest/k8s-psat`: a Kubernetes projected service account token of a cluster the server knows. */
export interface PsatAttestRequest {
  readonly cluster: string;
  readonly token: string;
  readonly csr: string;
}

/** The answer to either attestation: the agent's SVID and the trust bundle to check it against. */
export interface AttestAnswer {
  readonly spiffeId: string;
  readonly selectors: readonly string[];
  /** PEM chain, leaf first. */
  readonly svid: string;
  /** PEM trust bundle of the server's trust domain. */
  readonly bundle: string;
  readonly expiresAt: string;
}

/** `POST /v1/agent/renew`: a new SVID for the calling agent. */
export interface RenewRequest {
  readonly csr: string;
}

export interface RenewAnswer {
  readonly spiffeId: string;
  readonly svid: string;
  readonly bundle: string;
  readonly expiresAt: string;
}

/** `POST /v1/agent/svids`: X.509-SVIDs for the calling agent's entries, 1 to MAX_SVID_BATCH at a time. */
export interface SvidBatchRequest {
  readonly requests: ReadonlyArray<{ readonly entryId: string; readonly csr: string }>;
}
export const MAX_SVID_BATCH = 1000;

export interface SignedSvid {
  readonly entryId: string;
  readonly spiffeId: string;
  /** PEM chain, leaf first. */
  readonly svid: string;
  readonly expiresAt: string;
}

export interface SvidBatchAnswer {
  readonly svids: readonly SignedSvid[];
}

/** `POST /v1/agent/jwt-svid`: a JWT-SVID for one of the calling agent's entries. */
export interface JwtSvidRequest {
  readonly entryId: string;
  readonly audience: readonly string[];
}

export interface JwtSvidAnswer {
  readonly spiffeId: string;
  readonly token: string;
  readonly expiresAt: string;
}

/** The fields of each request body, as the server's route table declares them (any other is refused). */
export const REQUEST_FIELDS = {
  attestJoinToken: ['joinToken', 'csr'],
  attestPsat: ['cluster', 'token', 'csr'],
  renew: ['csr'],
  svids: ['requests'],
  jwtSvid: ['entryId', 'audience'],
} as const satisfies {
  attestJoinToken: ReadonlyArray<keyof JoinTokenAttestRequest>;
  attestPsat: ReadonlyArray<keyof PsatAttestRequest>;
  renew: ReadonlyArray<keyof RenewRequest>;
  svids: ReadonlyArray<keyof SvidBatchRequest>;
  jwtSvid: ReadonlyArray<keyof JwtSvidRequest>;
};
/** The fields of each item of `SvidBatchRequest.requests`. */
export const SVID_REQUEST_FIELDS = ['entryId', 'csr'] as const satisfies ReadonlyArray<keyof SvidBatchRequest['requests'][number]>;

// The agent's side. Shapes only: what the certificates say (chain, SPIFFE ID, key) the agent checks itself.

export function decodeAttestAnswer(raw: unknown): AttestAnswer {
  const bad = refuse('attestation answer');
  if (!isObject(raw)) return bad('not an object');
  for (const k of ['spiffeId', 'svid', 'bundle'] as const) if (typeof raw[k] !== 'string' || !raw[k]) bad(k);
  if (!isStrings(raw['selectors'])) bad('selectors');
  if (!isTime(raw['expiresAt'])) bad('expiresAt');
  return raw as unknown as AttestAnswer;
}

export function decodeRenewAnswer(raw: unknown): RenewAnswer {
  const bad = refuse('renewal answer');
  if (!isObject(raw)) return bad('not an object');
  for (const k of ['spiffeId', 'svid', 'bundle'] as const) if (typeof raw[k] !== 'string' || !raw[k]) bad(k);
  if (!isTime(raw['expiresAt'])) bad('expiresAt');
  return raw as unknown as RenewAnswer;
}

/** A batch answer; the SVIDs in it that are malformed are left out (the agent asks for them again), the rest kept. */
export function decodeSvidBatchAnswer(raw: unknown): { svids: SignedSvid[]; malformed: number } {
  const bad = refuse('signing answer');
  if (!isObject(raw) || !Array.isArray(raw['svids'])) return bad('no svids');
  const svids: SignedSvid[] = [];
  let malformed = 0;
  for (const s of raw['svids'] as unknown[]) {
    if (isObject(s) && typeof s['entryId'] === 'string' && typeof s['spiffeId'] === 'string' && typeof s['svid'] === 'string' && isTime(s['expiresAt']))
      svids.push(s as unknown as SignedSvid);
    else malformed++;
  }
  return { svids, malformed };
}

/** The envelope only: the token itself (signature, `sub`, `aud`, `exp`) the agent validates against its bundle (agent/src/jwt-svids.ts). */
export function decodeJwtSvidAnswer(raw: unknown): JwtSvidAnswer {
  const bad = refuse('JWT-SVID answer');
  if (!isObject(raw)) return bad('not an object');
  if (typeof raw['spiffeId'] !== 'string' || !raw['spiffeId']) bad('spiffeId');
  if (typeof raw['token'] !== 'string' || !raw['token']) bad('token');
  if (!isTime(raw['expiresAt'])) bad('expiresAt');
  return raw as unknown as JwtSvidAnswer;
}
