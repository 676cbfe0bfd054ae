/**
 * JWT-SVIDs for the agent's entries: minted by the server, checked here before they are cached or
 * served (a token the agent's own bundle does not vouch for is never handed to a workload), cached
 * per entry and audience until half their life.
 */
import type { Logger } from 'pino';
import { WritError, isWritError, validateJwtSvid, type TrustBundle } from '@writ/spiffe';
import { AGENT_PATHS, decodeJwtSvidAnswer, type JwtSvidRequest } from '@writ/protocol';
import type { ServerApi } from './server-client.ts';
import type { EntryView } from './sync.ts';

/** A JWT-SVID ready to hand to a workload; `expiresAt` is its `exp` (epoch ms). */
export interface MintedJwtSvid {
  readonly token: string;
  readonly expiresAt: number;
}

export interface JwtSvidsOptions {
  readonly client: Pick<ServerApi, 'call'>;
  readonly clock: () => number;
  readonly log: Logger;
  /** The bundle of the agent's own trust domain as last synced (its JWT authorities are what a token must be signed by). */
  readonly bundle: () => TrustBundle | undefined;
}

interface Cached extends MintedJwtSvid {
  readonly refreshAt: number;
}

export class JwtSvids {
  readonly #o: JwtSvidsOptions;
  readonly #cache = new Map<string, Cached>();

  constructor(opts: JwtSvidsOptions) {
    this.#o = opts;
  }

  /** Forgets every cached token (entries, bundles or policy changed). */
  clear(): void {
    this.#cache.clear();
  }

  /**
   * A JWT-SVID for `entry` and `audience`: from the cache until half its life, else from the
   * server, checked first. While the server is away (or answers wrongly) a cached token that
   * has not expired is still served; a refused answer is never cached.
   */
  async get(entry: EntryView, audience: readonly string[]): Promise<MintedJwtSvid> {
    if (audience.length === 0) throw new TypeError('a JWT-SVID needs at least one audience');
    const key = `${entry.id}\u0000${[...audience].sort().join('\u0000')}`;
    const now = this.#o.clock();
    const hit = this.#cache.get(key);
    if (hit && now < hit.refreshAt) return hit;
    try {
      const req: JwtSvidRequest = { entryId: entry.id, audience };
      const r = decodeJwtSvidAnswer(await this.#o.client.call<unknown>('POST', AGENT_PATHS.jwtSvid, req));
      const expiresAt = this.#check(entry, audience, r.spiffeId, r.token, now);
      const v = { token: r.token, expiresAt, refreshAt: now + (expiresAt - now) / 2 };
      this.#cache.set(key, v);
      return v;
    } catch (err) {
      // Server away: a cached token that has not expired is still good.
      if (hit && hit.expiresAt > now + 5000) return hit;
      throw err;
    }
  }

  /** The token's expiry (ms), once it is a JWT-SVID for `entry` and exactly `audience`, signed by a key of the agent's bundle. */
  #check(entry: EntryView, audience: readonly string[], named: string, token: string, now: number): number {
    const refuse = (why: string, code?: string): never => {
      this.#o.log.error(
        { entryId: entry.id, spiffeId: entry.spiffeId, audience, ...(code ? { code } : {}), err: why },
        "refused the server's JWT-SVID answer: not cached, not served",
      );
      throw new WritError('ERR_REQUEST_FAILED', `the server's JWT-SVID answer was refused: ${why}`);
    };
    if (named !== entry.spiffeId) refuse(`it names ${named.slice(0, 200)}, expected ${entry.spiffeId}`);
    const bundle = this.#o.bundle();
    if (!bundle || bundle.jwtAuthorities.size === 0)
      return refuse(`the agent holds no JWT authorities of ${entry.spiffeId.slice(9).split('/')[0]} to check it with`);
    // Only the agent's own trust domain: its entries' IDs are in it, so a token signed elsewhere is not theirs.
    const bundles = new Map([[bundle.trustDomain, bundle]]);
    let exp = 0;
    let aud: readonly string[] = [];
    let sub = '';
    for (const a of audience) {
      try {
        const v = validateJwtSvid(token, bundles, { audience: a, now: new Date(now) });
        exp = v.expiresAt.getTime();
        aud = typeof v.claims.aud === 'string' ? [v.claims.aud] : v.claims.aud;
        sub = v.spiffeId.uri;
      } catch (err) {
        return refuse(`its token does not validate: ${(err as Error).message.replace(/^JWT-SVID rejected: /, '')}`, isWritError(err) ? err.code : undefined);
      }
    }
    if (sub !== entry.spiffeId) refuse(`its token's sub is ${sub.slice(0, 200)}, expected ${entry.spiffeId}`);
    // An audience nobody asked for would let the token be replayed to that service.
    const extra = aud.filter((a) => !audience.includes(a));
    if (extra.length) refuse(`its token is also for ${extra.join(', ').slice(0, 200)}, not asked for`);
    // The validator allows clock skew; a token already past its exp is of no use to a workload.
    if (exp <= now) refuse(`its token expired at ${new Date(exp).toISOString()}`, 'ERR_JWT_EXPIRED');
    return exp;
  }
}
