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
import { JwtSvidValidator, isWritError, parseBundleJson, parseCertificate, verifyX509Svid, type Certificate, type TrustBundle } from '@writ/spiffe';
import type { DecisionRecord } from '../store/types.ts';
import { newDecisionId } from '@writ/sdk/internal';
import type { ApiContext } from './context.ts';
import { readBytes, type AddRoute } from './http.ts';

export const TOKEN_PATH = '/v1/token';
/** At most this many turns of the event loop a decision waits for more to share its commit. */
const GROUP_COMMIT_TURNS = 4;

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
  const verifiedSockets = new WeakMap<TLSSocket, { id: string; notAfter: number; bundleSequence: number | undefined }>();
  const td = ctx.trustDomain;
  const tdId = `spiffe://${td}`;
  const endpoint = (): string => `${ctx.publicUrl}${TOKEN_PATH}`;
  const issuer = (): string => ctx.jwtIssuer || ctx.publicUrl;
  const own = { get: (name: string) => (name === td ? ctx.ca.bundle() : undefined) };

  // Policies and federated bundles from the hub's shared snapshot (what the agents get too): no
  // query per exchange, and a change on this replica is seen at once, another replica's within 1 s.
  let policyCache: { revision: number; policies: TokenPolicy[] } | undefined;
  let federated: { version: string; bundles: Map<string, TrustBundle> } = { version: '', bundles: new Map() };
  const current = async (): Promise<{ revision: number; policies: TokenPolicy[] }> => {
    const snap = await ctx.hub.snapshot();
    if (policyCache?.revision !== snap.policyRevision)
      policyCache = { revision: snap.policyRevision, policies: tokenPoliciesOf((JSON.parse(snap.policy) as { policies: Record<string, string> }).policies) };
    if (federated.version !== snap.bundlesVersion) {
      const bundles = new Map<string, TrustBundle>();
      const fed = (JSON.parse(snap.bundles) as { federatedBundles?: Record<string, unknown> }).federatedBundles ?? {};
      for (const [name, json] of Object.entries(fed)) {
        try {
          bundles.set(name, parseBundleJson(name, json));
        } catch {
          // A stored bundle that does not parse signs nothing here.
        }
      }
      federated = { version: snap.bundlesVersion, bundles };
    }
    return policyCache;
  };
  /** This trust domain's bundle and the federated ones the server holds: what a subject JWT-SVID may be signed by. */
  const subjectBundles = { get: (name: string) => (name === td ? ctx.ca.bundle() : federated.bundles.get(name)) };
  // A subject token exchanged again (several targets, retries) is not verified again; a removed key still takes effect at once.
  const subjectValidator = new JwtSvidValidator(subjectBundles, { clock: () => new Date(ctx.clock()) });
  // The same for client assertions and actor tokens (this trust domain's keys only), keyed by the
  // token's exact bytes, at most 10,000: an agent sends its caller's JWT-SVID with every exchange.
  // A remembered one is still checked for expiry and audience, and that its key is in the bundle.
  const ownValidator = new JwtSvidValidator(own, { clock: () => new Date(ctx.clock()) });

  // Group commit: the decisions of the requests in flight go to the store in one write, and each
  // answer waits for its own record, so no token leaves unlogged. The write waits while turns of
  // the event loop bring more (a commit costs about as much as several records), at most
  // GROUP_COMMIT_TURNS turns, and goes at once after a turn that brought none.
  let pending: DecisionRecord[] = [];
  let flush: Promise<void> | undefined;
  const gathered = (): Promise<void> =>
    new Promise<void>((resolve) => {
      let seen = 0;
      let turns = 0;
      const turn = (): void => {
        if (pending.length === seen || turns++ === GROUP_COMMIT_TURNS) return resolve();
        seen = pending.length;
        setImmediate(turn);
      };
      turn();
    });
  const record = (d: DecisionRecord): Promise<void> => {
    pending.push(d);
    flush ??= gathered().then(() => {
      const batch = pending;
      pending = [];
      flush = undefined;
      return ctx.store.addDecisions(batch);
    });
    return flush;
  };

  /** The client: its X.509-SVID over mTLS, or a JWT-SVID client assertion (RFC 7523) for this trust domain or this endpoint. */
  const authenticateClient = (raw: IncomingMessage, tr: TokenRequest): string => {
    let fromCert: string | undefined;
    const sock = raw.socket as TLSSocket;
    const known = verifiedSockets.get(sock);
    // A connection's certificate cannot change: its chain is verified again only when it expired or the bundle changed.
    if (known && known.notAfter > ctx.clock() && known.bundleSequence === ctx.ca.bundle().sequence) fromCert = known.id;
    else {
      const chain = peerChain(raw);
      if (chain.length) {
        try {
          fromCert = verifyX509Svid(chain, new Map([[td, ctx.ca.bundle()]]), new Date(ctx.clock())).spiffeId.uri;
        } catch (err) {
          asTokenError(err, 'ERR_TOKEN_CLIENT_INVALID', 'client certificate rejected');
        }
        verifiedSockets.set(sock, { id: fromCert, notAfter: chain[0]!.notAfter.getTime(), bundleSequence: ctx.ca.bundle().sequence });
      }
    }
    let fromAssertion: string | undefined;
    if (tr.clientAssertion !== undefined) {
      const auds = peekAudience(tr.clientAssertion);
      const audience = auds.includes(tdId) ? tdId : auds.includes(endpoint()) ? endpoint() : undefined;
      if (!audience) throw new TokenError('ERR_TOKEN_CLIENT_INVALID', `client_assertion must be a JWT-SVID for audience ${tdId} or ${endpoint()}`);
      try {
        fromAssertion = ownValidator.validate(tr.clientAssertion, audience).spiffeId.uri;
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
  const verifySubject = (tr: TokenRequest, client: string): SubjectInfo & { tctx?: unknown; rctx?: unknown } => {
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
      svid = subjectValidator.validate(tr.subjectToken, audience);
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
      return ownValidator.validate(tr.actorToken, audience).spiffeId.uri;
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
        await record({
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
        });
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
        const set = await current();
        const subject = verifySubject(tr, client);
        const actor = verifyActor(tr, client);
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
        ctx.metrics.tokenExchanges.inc({ result: 'granted' });
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
        if (err instanceof TokenError) {
          if (!logged.has(err)) await log('deny', `${err.code}: ${err.message}`);
          ctx.metrics.tokenExchanges.inc({ result: err.error });
        }
        throw err;
      }
    },
  );
}
