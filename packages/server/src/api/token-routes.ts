/**
 * `POST /v1/token`: token exchange (RFC 8693) and transaction tokens, decided by the TokenPolicies
 * of the current policy revision (@writ/broker holds the rules; this file authenticates, looks up
 * keys and policies, signs and logs). Errors are RFC 6749 section 5.2 answers that also carry the
 * Writ `code`; every grant and refusal is a decision in the decision log (action `token-exchange`).
 */
import type { IncomingMessage } from 'node:http';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import {
  ACCESS_TOKEN_TYP,
  TOKEN_TYPE_JWT,
  TOKEN_TYPE_TXN,
  TXN_TOKEN_TYP,
  TokenError,
  accessTokenClaims,
  decideGrant,
  parseTokenRequest,
  peekAudience,
  peekTyp,
  REQUEST_LIMITS,
  signToken,
  tokenPoliciesOf,
  txnTokenClaims,
  verifyToken,
  type SubjectInfo,
  type TokenPolicy,
  type TokenRequest,
} from '@writ/broker';
import { isWritError, parseBundleJson, parseCertificate, validateJwtSvid, verifyX509Svid, type Certificate, type TrustBundle } from '@writ/spiffe';
import { newDecisionId } from '@writ/sdk/internal';
import type { ApiContext } from './context.ts';
import { readBytes, type AddRoute } from './http.ts';

export const TOKEN_PATH = '/v1/token';

/** A library error about a token the client sent, re-thrown as the OAuth error it is. */
function asTokenError(err: unknown, code: 'ERR_TOKEN_GRANT_INVALID' | 'ERR_TOKEN_CLIENT_INVALID' | 'ERR_TOKEN_REQUEST_INVALID', what: string): never {
  if (err instanceof TokenError) throw new TokenError(code, `${what}: ${err.message}`);
  if (isWritError(err) && !['ERR_STORE_UNAVAILABLE', 'ERR_CA_UNAVAILABLE'].includes(err.code)) throw new TokenError(code, `${what}: ${err.message}`);
  throw err;
}

function peerChain(req: IncomingMessage): Certificate[] {
  const sock = req.socket as TLSSocket;
  const chain: Certificate[] = [];
  let peer = sock.getPeerCertificate?.(true) as DetailedPeerCertificate | undefined;
  while (peer?.raw && chain.length < 8) {
    chain.push(parseCertificate(peer.raw));
    if (!peer.issuerCertificate || peer.issuerCertificate === peer || peer.issuerCertificate.raw.equals(peer.raw)) break;
    peer = peer.issuerCertificate;
  }
  return chain;
}

export function tokenRoutes(ctx: ApiContext, add: AddRoute): void {
  const logged = new WeakSet<TokenError>();
  const td = ctx.trustDomain;
  const tdId = `spiffe://${td}`;
  const endpoint = (): string => `${ctx.publicUrl}${TOKEN_PATH}`;
  const issuer = (): string => ctx.jwtIssuer || ctx.publicUrl;
  const own = { get: (name: string) => (name === td ? ctx.ca.bundle() : undefined) };

  let policyCache: { revision: number; policies: TokenPolicy[] } | undefined;
  const currentPolicies = async (): Promise<{ revision: number; policies: TokenPolicy[] }> => {
    const rev = await ctx.store.getPolicyRevision();
    if (!rev) return { revision: 0, policies: [] };
    if (policyCache?.revision !== rev.revision) policyCache = { revision: rev.revision, policies: tokenPoliciesOf(rev.policies) };
    return policyCache;
  };
  const federated = new Map<string, { updatedAt: number; bundle: TrustBundle }>();
  /** This trust domain's bundle and the federated ones the server holds: what a subject JWT-SVID may be signed by. */
  const subjectBundles = async () => {
    const rows = await ctx.store.listFederatedBundles();
    const live = new Set(rows.map((r) => r.trustDomain));
    for (const k of federated.keys()) if (!live.has(k)) federated.delete(k);
    for (const r of rows) {
      if (federated.get(r.trustDomain)?.updatedAt === r.updatedAt) continue;
      try {
        federated.set(r.trustDomain, { updatedAt: r.updatedAt, bundle: parseBundleJson(r.trustDomain, r.bundle) });
      } catch {
        federated.delete(r.trustDomain);
      }
    }
    return { get: (name: string) => (name === td ? ctx.ca.bundle() : federated.get(name)?.bundle) };
  };

  /** The client: its X.509-SVID over mTLS, or a JWT-SVID client assertion (RFC 7523) for this trust domain or this endpoint. */
  const authenticateClient = (raw: IncomingMessage, tr: TokenRequest): string => {
    let fromCert: string | undefined;
    const chain = peerChain(raw);
    if (chain.length) {
      try {
        fromCert = verifyX509Svid(chain, new Map([[td, ctx.ca.bundle()]])).spiffeId.uri;
      } catch (err) {
        asTokenError(err, 'ERR_TOKEN_CLIENT_INVALID', 'client certificate rejected');
      }
    }
    let fromAssertion: string | undefined;
    if (tr.clientAssertion !== undefined) {
      const auds = peekAudience(tr.clientAssertion);
      const audience = auds.includes(tdId) ? tdId : auds.includes(endpoint()) ? endpoint() : undefined;
      if (!audience) throw new TokenError('ERR_TOKEN_CLIENT_INVALID', `client_assertion must be a JWT-SVID for audience ${tdId} or ${endpoint()}`);
      try {
        fromAssertion = validateJwtSvid(tr.clientAssertion, own, { audience, now: new Date(ctx.clock()) }).spiffeId.uri;
      } catch (err) {
        asTokenError(err, 'ERR_TOKEN_CLIENT_INVALID', 'client_assertion rejected');
      }
    }
    if (fromCert && fromAssertion && fromCert !== fromAssertion)
      throw new TokenError('ERR_TOKEN_CLIENT_INVALID', `the client certificate (${fromCert}) and client_assertion (${fromAssertion}) name different clients`);
    const client = fromAssertion ?? fromCert;
    if (!client)
      throw new TokenError(
        'ERR_TOKEN_CLIENT_INVALID',
        'client authentication required: an X.509-SVID of this trust domain as TLS client certificate, or client_assertion (a JWT-SVID)',
      );
    if (tr.clientId !== undefined && tr.clientId !== client)
      throw new TokenError('ERR_TOKEN_CLIENT_INVALID', `client_id ${tr.clientId.slice(0, 120)} is not the authenticated client ${client}`);
    return client;
  };

  /** The subject token, verified: a JWT-SVID (this or a federated trust domain), or a token Writ issued. */
  const verifySubject = async (tr: TokenRequest, client: string): Promise<SubjectInfo & { tctx?: unknown; rctx?: unknown }> => {
    const now = ctx.clock();
    const typ = peekTyp(tr.subjectToken);
    if (typ === ACCESS_TOKEN_TYP || typ === TXN_TOKEN_TYP || tr.subjectTokenType === TOKEN_TYPE_TXN) {
      const wantTxn = tr.subjectTokenType === TOKEN_TYPE_TXN;
      let v;
      try {
        v = verifyToken(tr.subjectToken, {
          bundles: own,
          trustDomain: td,
          audience: client,
          issuer: issuer(),
          types: [wantTxn ? 'txn-token' : 'access-token'],
          now,
        });
      } catch (err) {
        asTokenError(err, 'ERR_TOKEN_GRANT_INVALID', 'subject_token rejected');
      }
      return {
        id: v.subject,
        kind: v.type,
        scopes: v.scopes,
        actors: v.actors,
        expiresAt: v.expiresAt,
        txn: v.txn,
        requestingWorkloads: v.requestingWorkloads,
        ...(v.claims['tctx'] !== undefined ? { tctx: v.claims['tctx'] } : {}),
        ...(v.claims['rctx'] !== undefined ? { rctx: v.claims['rctx'] } : {}),
      };
    }
    // A JWT-SVID sent to the client (delegation), or the client's own for this trust domain or endpoint.
    const auds = peekAudience(tr.subjectToken);
    const audience = auds.includes(client) ? client : auds.includes(tdId) ? tdId : auds.includes(endpoint()) ? endpoint() : undefined;
    if (!audience)
      throw new TokenError(
        'ERR_TOKEN_GRANT_INVALID',
        `subject_token rejected: its audience (${auds.join(', ').slice(0, 200) || 'none'}) is not the client ${client}`,
      );
    let svid;
    try {
      svid = validateJwtSvid(tr.subjectToken, await subjectBundles(), { audience, now: new Date(now) });
    } catch (err) {
      asTokenError(err, 'ERR_TOKEN_GRANT_INVALID', 'subject_token rejected');
    }
    if (audience !== client && svid.spiffeId.uri !== client)
      throw new TokenError('ERR_TOKEN_GRANT_INVALID', `subject_token rejected: a JWT-SVID for ${audience} is exchanged only by its own subject`);
    return { id: svid.spiffeId.uri, kind: 'jwt-svid', actors: [], expiresAt: svid.expiresAt.getTime() };
  };

  const verifyActor = (tr: TokenRequest, client: string): string | undefined => {
    if (tr.actorToken === undefined) return undefined;
    const auds = peekAudience(tr.actorToken);
    const audience = auds.includes(tdId) ? tdId : auds.includes(endpoint()) ? endpoint() : undefined;
    if (!audience) throw new TokenError('ERR_TOKEN_GRANT_INVALID', `actor_token must be a JWT-SVID for audience ${tdId} or ${endpoint()}`);
    try {
      return validateJwtSvid(tr.actorToken, own, { audience, now: new Date(ctx.clock()) }).spiffeId.uri;
    } catch (err) {
      return asTokenError(err, 'ERR_TOKEN_GRANT_INVALID', `actor_token rejected (client ${client})`);
    }
  };

  add(
    'POST',
    TOKEN_PATH,
    undefined,
    'Token exchange (RFC 8693): a form-encoded request (grant_type urn:ietf:params:oauth:grant-type:token-exchange, subject_token, audience, scope, requested_token_type jwt or txn_token); the client authenticates with its X.509-SVID (mTLS) or a JWT-SVID client_assertion. Decided by the TokenPolicies; errors as RFC 6749 section 5.2 (error, error_description) with the Writ code.',
    async (req) => {
      const now = ctx.clock();
      let client = '';
      let audience = '';
      let revision = 0;
      const log = async (decision: 'allow' | 'deny', reason: string, policy?: string): Promise<void> => {
        await ctx.store.addDecisions([
          {
            id: newDecisionId(now),
            at: now,
            from: client,
            to: audience,
            action: 'token-exchange',
            decision,
            reason: reason.slice(0, 1000),
            policyRevision: revision,
            rule: policy ? `TokenPolicy/${policy}` : '',
            reporter: 'server',
          },
        ]);
      };
      try {
        const type = (req.raw.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'application/x-www-form-urlencoded')
          throw new TokenError(
            'ERR_TOKEN_REQUEST_INVALID',
            `Content-Type must be application/x-www-form-urlencoded, got ${JSON.stringify(type.slice(0, 60) || 'none')}`,
          );
        let body: Buffer;
        try {
          body = await readBytes(req.raw, REQUEST_LIMITS.bytes);
        } catch (err) {
          if (isWritError(err, 'ERR_BODY_TOO_LARGE')) throw new TokenError('ERR_BODY_TOO_LARGE', err.message);
          throw err;
        }
        const tr = parseTokenRequest(body);
        audience = tr.audience;
        client = authenticateClient(req.raw, tr);
        if (tr.requestedTokenType === TOKEN_TYPE_TXN && tr.audience !== tdId)
          throw new TokenError('ERR_TOKEN_TARGET_INVALID', `a transaction token's audience is this trust domain, ${tdId}`);
        const subject = await verifySubject(tr, client);
        const actor = verifyActor(tr, client);
        const set = await currentPolicies();
        revision = set.revision;
        const d = decideGrant(set.policies, {
          client,
          subject,
          ...(actor !== undefined ? { actor } : {}),
          audience: tr.audience,
          scopes: tr.scopes,
          requestedTokenType: tr.requestedTokenType,
          now,
        });
        if (!d.granted) {
          await log('deny', `${d.code}: ${d.reason}`, d.policy);
          const refusal = new TokenError(d.code, d.reason);
          logged.add(refusal);
          throw refusal;
        }
        if (subject.kind === 'txn-token' && tr.requestDetails)
          throw new TokenError('ERR_TOKEN_REQUEST_INVALID', 'a replacement transaction token keeps the original tctx: request_details is not allowed');
        const { token, expiresAt } = ctx.ca.withJwtKey((kid, signer, keyEnd) => {
          const ttlMs = Math.max(1000, Math.min(d.ttlMs, keyEnd - now));
          const claims =
            tr.requestedTokenType === TOKEN_TYPE_TXN
              ? txnTokenClaims({
                  issuer: issuer(),
                  trustDomain: td,
                  subject: subject.id,
                  scopes: d.scopes,
                  requestingWorkloads: [...(subject.requestingWorkloads ?? []).filter((w) => w !== client), client],
                  ...(subject.txn !== undefined ? { txn: subject.txn } : {}),
                  ...(subject.tctx !== undefined ? { tctx: subject.tctx as Record<string, unknown> } : tr.requestDetails ? { tctx: tr.requestDetails } : {}),
                  ...(tr.requestContext ? { rctx: tr.requestContext } : subject.rctx !== undefined ? { rctx: subject.rctx as Record<string, unknown> } : {}),
                  now,
                  ttlMs,
                })
              : accessTokenClaims({
                  issuer: issuer(),
                  subject: subject.id,
                  audience: tr.audience,
                  scopes: d.scopes,
                  client,
                  actors: d.actors,
                  ...(subject.txn !== undefined ? { txn: subject.txn } : {}),
                  now,
                  ttlMs,
                });
          return {
            token: signToken(claims, tr.requestedTokenType === TOKEN_TYPE_TXN ? TXN_TOKEN_TYP : ACCESS_TOKEN_TYP, kid, signer),
            expiresAt: (claims['exp'] as number) * 1000,
          };
        });
        await log('allow', d.reason, d.policy);
        return {
          status: 200,
          body: {
            access_token: token,
            issued_token_type: tr.requestedTokenType,
            // RFC 8693 section 2.2.1: N_A for a token that is not an OAuth access token.
            token_type: tr.requestedTokenType === TOKEN_TYPE_JWT ? 'Bearer' : 'N_A',
            expires_in: Math.max(0, Math.floor((expiresAt - now) / 1000)),
            scope: d.scopes.join(' '),
          },
          headers: { pragma: 'no-cache' },
        };
      } catch (err) {
        // Refusals decided by policy were logged above with their policy; the other refusals here.
        if (err instanceof TokenError && !logged.has(err)) await log('deny', `${err.code}: ${err.message}`);
        throw err;
      }
    },
  );
}
