/**
 * Node attestation with Kubernetes projected service account tokens (k8s_psat): the token's
 * signature is checked against the cluster issuer's JWKS (URL or file), then its audience, expiry,
 * issuer and, when configured, the allowed service accounts. Selectors come from its claims.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { WritError, verifyJws } from '@writ/spiffe';

export interface PsatCluster {
  readonly jwksUrl?: string;
  readonly jwksFile?: string;
  /** CA to trust for jwksUrl (the API server's CA). */
  readonly jwksCaFile?: string;
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

  constructor(clusters: Record<string, PsatCluster>) {
    this.#clusters = new Map(Object.entries(clusters));
    for (const [name, c] of this.#clusters) {
      if (!NAME.test(name)) throw new WritError('ERR_CONFIG_INVALID', `k8sPsat: cluster name "${name}" must be lowercase a-z 0-9 . -`, { field: 'k8sPsat' });
      if (!c.jwksUrl === !c.jwksFile)
        throw new WritError('ERR_CONFIG_INVALID', `k8sPsat.${name}: give exactly one of jwksUrl or jwksFile`, { field: 'k8sPsat' });
    }
  }

  get clusters(): string[] {
    return [...this.#clusters.keys()];
  }

  async #keys(name: string, c: PsatCluster, refresh: boolean): Promise<Map<string, KeyObject>> {
    const hit = this.#jwks.get(name);
    if (hit && !refresh && Date.now() - hit.at < 300_000) return hit.keys;
    const text = c.jwksFile ? readFileSync(c.jwksFile, 'utf8') : await fetchText(c.jwksUrl!, c.jwksCaFile ? readFileSync(c.jwksCaFile, 'utf8') : undefined);
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
    let verified: { claims: Record<string, unknown> };
    try {
      verified = verifyJws(token, await this.#keys(cluster, c, false));
    } catch (err) {
      // A key rotated in the cluster: look again once.
      if ((err as WritError).code !== 'ERR_JWT_KEY_NOT_FOUND') throw new WritError('ERR_UNAUTHENTICATED', `k8s_psat: ${(err as Error).message}`);
      try {
        verified = verifyJws(token, await this.#keys(cluster, c, true));
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

function fetchText(url: string, ca: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ...(ca ? { ca } : {}), timeout: 5000 }, (res) => {
      let t = '';
      res.on('data', (d: Buffer) => {
        t += d.toString();
        if (t.length > 1024 * 1024) req.destroy(new Error('JWKS too large'));
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(t) : reject(new WritError('ERR_CA_UNAVAILABLE', `JWKS ${url}: HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new WritError('ERR_CA_UNAVAILABLE', `JWKS ${url}: ${e.code ?? e.message}`)));
    req.end();
  });
}
