/**
 * Node attestation with Kubernetes projected service account tokens (k8s_psat): the token's
 * signature is checked against the cluster issuer's JWKS (URL or file), then its audience, expiry,
 * issuer and, when configured, the allowed service accounts. Selectors come from its claims.
 *
 * A JWKS URL on the API server itself (`/openid/v1/jwks`) needs a bearer token unless anonymous
 * discovery is on: `jwksTokenFile` names it (a service account token the kubelet rotates, so it is
 * read again at each fetch), `jwksCaFile` the API server's CA.
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { WritError, isWritError, verifyJws } from '@writ/spiffe';

export interface PsatCluster {
  readonly jwksUrl?: string;
  readonly jwksFile?: string;
  /** CA to trust for jwksUrl (the API server's CA). */
  readonly jwksCaFile?: string;
  /** A bearer token for jwksUrl (e.g. /var/run/secrets/kubernetes.io/serviceaccount/token), read at each fetch. */
  readonly jwksTokenFile?: string;
  readonly issuer?: string;
  /** Audience the token must carry (default: writ-server). */
  readonly audience?: string;
  /** `namespace:serviceaccount` pairs allowed to attest; default any. */
  readonly serviceAccounts?: readonly string[];
}

export interface PsatResult {
  readonly nodeName: string;
  readonly selectors: string[];
  readonly agentPath: string;
}

const NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

export class PsatAttestor {
  readonly #clusters: ReadonlyMap<string, PsatCluster>;
  readonly #jwks = new Map<string, { at: number; keys: Map<string, KeyObject> }>();

  readonly #onJwksError: ((cluster: string, message: string) => void) | undefined;

  /** `onJwksError`: told of every failed JWKS fetch (the agent only sees a 503), for the server's log. */
  constructor(clusters: Record<string, PsatCluster>, opts: { onJwksError?: (cluster: string, message: string) => void } = {}) {
    this.#clusters = new Map(Object.entries(clusters));
    this.#onJwksError = opts.onJwksError;
    for (const [name, c] of this.#clusters) checkPsatCluster(name, c);
  }

  get clusters(): string[] {
    return [...this.#clusters.keys()];
  }

  async #keys(name: string, c: PsatCluster, refresh: boolean): Promise<Map<string, KeyObject>> {
    const hit = this.#jwks.get(name);
    if (hit && !refresh && Date.now() - hit.at < 300_000) return hit.keys;
    let text: string;
    try {
      text = c.jwksFile ? readFileSync(c.jwksFile, 'utf8') : await fetchJwks(name, c);
    } catch (err) {
      const e = isWritError(err)
        ? err
        : new WritError('ERR_CA_UNAVAILABLE', `k8sPsat.${name}: cannot read jwksFile ${c.jwksFile}: ${(err as NodeJS.ErrnoException).code}`);
      this.#onJwksError?.(name, e.message);
      throw e;
    }
    let doc: { keys?: Array<Record<string, unknown>> };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch {
      throw new WritError('ERR_CA_UNAVAILABLE', `k8sPsat.${name}: the JWKS is not JSON`);
    }
    const keys = new Map<string, KeyObject>();
    for (const k of doc.keys ?? []) {
      if (k['use'] !== undefined && k['use'] !== 'sig') continue;
      try {
        keys.set(
          String(k['kid'] ?? ''),
          createPublicKey({ key: { kty: k['kty'], n: k['n'], e: k['e'], crv: k['crv'], x: k['x'], y: k['y'] } as never, format: 'jwk' }),
        );
      } catch {
        /* unknown key type: skipped */
      }
    }
    this.#jwks.set(name, { at: Date.now(), keys });
    return keys;
  }

  async attest(cluster: string, token: string, now = Date.now()): Promise<PsatResult> {
    const c = this.#clusters.get(cluster);
    if (!c) throw new WritError('ERR_UNAUTHENTICATED', `k8s_psat: cluster "${cluster.slice(0, 64)}" is not configured on this server`);
    // The cluster's keys first: a JWKS that cannot be fetched is the server's trouble (503), not the token's.
    let verified: { claims: Record<string, unknown> };
    const keys = await this.#keys(cluster, c, false);
    try {
      verified = verifyJws(token, keys);
    } catch (err) {
      // A key rotated in the cluster: look again once.
      if ((err as WritError).code !== 'ERR_JWT_KEY_NOT_FOUND') throw new WritError('ERR_UNAUTHENTICATED', `k8s_psat: ${(err as Error).message}`);
      const fresh = await this.#keys(cluster, c, true);
      try {
        verified = verifyJws(token, fresh);
      } catch (err2) {
        throw new WritError('ERR_UNAUTHENTICATED', `k8s_psat: ${(err2 as Error).message}`);
      }
    }
    const cl = verified.claims;
    const aud = c.audience ?? 'writ-server';
    const auds = typeof cl['aud'] === 'string' ? [cl['aud']] : Array.isArray(cl['aud']) ? cl['aud'] : [];
    if (!auds.includes(aud)) throw new WritError('ERR_UNAUTHENTICATED', `k8s_psat: the token's audience does not include "${aud}"`);
    if (typeof cl['exp'] !== 'number' || cl['exp'] * 1000 <= now) throw new WritError('ERR_UNAUTHENTICATED', 'k8s_psat: the token has expired');
    if (typeof cl['nbf'] === 'number' && cl['nbf'] * 1000 > now + 30_000) throw new WritError('ERR_UNAUTHENTICATED', 'k8s_psat: the token is not valid yet');
    if (c.issuer && cl['iss'] !== c.issuer) throw new WritError('ERR_UNAUTHENTICATED', 'k8s_psat: unexpected issuer');
    const k = cl['kubernetes.io'] as { namespace?: string; serviceaccount?: { name?: string }; pod?: { name?: string }; node?: { name?: string } } | undefined;
    const ns = k?.namespace;
    const sa = k?.serviceaccount?.name;
    const node = k?.node?.name;
    if (!ns || !sa)
      throw new WritError(
        'ERR_UNAUTHENTICATED',
        'k8s_psat: the token has no kubernetes.io namespace/serviceaccount claims (not a projected service account token?)',
      );
    if (!node || !NAME.test(node))
      throw new WritError('ERR_UNAUTHENTICATED', 'k8s_psat: the token is not bound to a node (kubernetes.io.node.name); use a projected token from a pod');
    if (c.serviceAccounts && !c.serviceAccounts.includes(`${ns}:${sa}`))
      throw new WritError('ERR_FORBIDDEN', `k8s_psat: service account ${ns}:${sa} may not attest agents`);
    return {
      nodeName: node,
      agentPath: `k8s_psat/${cluster}/${node}`,
      selectors: [
        `k8s_psat:cluster:${cluster}`,
        `k8s_psat:agent_ns:${ns}`,
        `k8s_psat:agent_sa:${sa}`,
        `k8s_psat:agent_node_name:${node}`,
        ...(k?.pod?.name ? [`k8s_psat:agent_pod_name:${k.pod.name}`] : []),
      ],
    };
  }
}

/**
 * Checks one cluster's settings at start, each error naming its setting: one key source, a URL that
 * is https, a token only with a URL, and files that are there (the token file is
 * read again at each fetch, the CA file too).
 */
export function checkPsatCluster(name: string, c: PsatCluster): void {
  const bad = (key: string, msg: string): never => {
    throw new WritError('ERR_CONFIG_INVALID', `k8sPsat.${name}${key ? `.${key}` : ''}: ${msg}`, { field: `k8sPsat.${name}${key ? `.${key}` : ''}` });
  };
  if (!NAME.test(name)) bad('', `cluster name "${name.slice(0, 64)}" must be lowercase a-z 0-9 . -`);
  for (const k of ['jwksUrl', 'jwksFile', 'jwksCaFile', 'jwksTokenFile', 'issuer', 'audience'] as const)
    if (c[k] !== undefined && (typeof c[k] !== 'string' || c[k] === '')) bad(k, 'must be a non-empty string');
  if (c.serviceAccounts !== undefined && (!Array.isArray(c.serviceAccounts) || c.serviceAccounts.some((x) => typeof x !== 'string')))
    bad('serviceAccounts', 'must be a list of namespace:serviceaccount');
  if (!c.jwksUrl === !c.jwksFile) bad('', 'give exactly one of jwksUrl or jwksFile');
  if (c.jwksFile) {
    for (const k of ['jwksCaFile', 'jwksTokenFile'] as const) if (c[k] !== undefined) bad(k, 'is for jwksUrl (a jwksFile is read from disk)');
    return;
  }
  let url: URL;
  try {
    url = new URL(c.jwksUrl!);
  } catch {
    return bad('jwksUrl', 'is not a URL (e.g. https://kubernetes.default.svc/openid/v1/jwks)');
  }
  if (url.protocol !== 'https:') bad('jwksUrl', 'must be an https:// URL');
  if (url.username || url.password) bad('jwksUrl', 'must not carry credentials; give a bearer token with jwksTokenFile');
  if (c.jwksTokenFile !== undefined) {
    let token: string;
    try {
      token = readFileSync(c.jwksTokenFile, 'utf8').trim();
    } catch (err) {
      return bad('jwksTokenFile', `cannot read ${c.jwksTokenFile}: ${(err as NodeJS.ErrnoException).code}`);
    }
    if (!token) bad('jwksTokenFile', `${c.jwksTokenFile} is empty`);
  }
  if (c.jwksCaFile !== undefined) {
    if (!existsSync(c.jwksCaFile)) bad('jwksCaFile', `${c.jwksCaFile} does not exist`);
    try {
      new X509Certificate(readFileSync(c.jwksCaFile));
    } catch {
      bad('jwksCaFile', `${c.jwksCaFile} holds no PEM certificate`);
    }
  }
}

/** What the API server says it refuses, from its `Status` body (`message`), never more than a line. */
function statusMessage(body: string): string {
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    return typeof m === 'string' ? `: ${m.slice(0, 200)}` : '';
  } catch {
    return '';
  }
}

/** GET jwksUrl, with the CA and the bearer token (read now: the kubelet rotates it) when configured. */
function fetchJwks(name: string, c: PsatCluster): Promise<string> {
  const url = c.jwksUrl!;
  const fail = (msg: string): WritError => new WritError('ERR_CA_UNAVAILABLE', `k8sPsat.${name}: JWKS ${url}: ${msg}`);
  let ca: string | undefined;
  let token: string | undefined;
  try {
    ca = c.jwksCaFile ? readFileSync(c.jwksCaFile, 'utf8') : undefined;
  } catch (err) {
    return Promise.reject(fail(`cannot read jwksCaFile ${c.jwksCaFile}: ${(err as NodeJS.ErrnoException).code}`));
  }
  if (c.jwksTokenFile) {
    try {
      token = readFileSync(c.jwksTokenFile, 'utf8').trim();
    } catch (err) {
      return Promise.reject(fail(`cannot read jwksTokenFile ${c.jwksTokenFile}: ${(err as NodeJS.ErrnoException).code}`));
    }
    if (!token) return Promise.reject(fail(`jwksTokenFile ${c.jwksTokenFile} is empty`));
  }
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        ...(ca ? { ca } : {}),
        timeout: 5000,
        headers: { accept: 'application/jwk-set+json, application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      },
      (res) => {
        let t = '';
        res.on('data', (d: Buffer) => {
          t += d.toString();
          if (t.length > 1024 * 1024) req.destroy(new Error('the JWKS is larger than 1 MiB'));
        });
        res.on('end', () => {
          const code = res.statusCode ?? 0;
          if (code === 200) return resolve(t);
          const said = statusMessage(t);
          if (code === 401)
            return reject(
              fail(
                c.jwksTokenFile
                  ? `HTTP 401${said} (the API server did not accept the token in ${c.jwksTokenFile}: expired, or not a token of this cluster)`
                  : `HTTP 401${said} (the API server wants a bearer token: set jwksTokenFile, e.g. /var/run/secrets/kubernetes.io/serviceaccount/token)`,
              ),
            );
          if (code === 403)
            return reject(fail(`HTTP 403${said} (bind the token's service account to the ClusterRole system:service-account-issuer-discovery)`));
          reject(fail(`HTTP ${code}${said}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out after 5 s')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(fail(e.code ?? e.message)));
    req.end();
  });
}
