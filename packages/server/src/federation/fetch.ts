/**
 * Fetching a peer's bundle from its bundle endpoint (SPIFFE_Federation.md section 5): one HTTPS
 * GET, no redirects, a size limit and a deadline. `https_web` authenticates the endpoint with the
 * Web PKI (the system roots and NODE_EXTRA_CA_CERTS); `https_spiffe` with the peer trust domain's
 * current bundle and the endpoint's SPIFFE ID, so it follows the peer's CA rotation by itself.
 */
import type { PeerCertificate } from 'node:tls';
import { request } from 'node:https';
import { WritError, certificatesToPem, type Certificate } from '@writ/spiffe';
import type { FederationProfile } from '../store/types.ts';

export interface BundleEndpoint {
  readonly url: string;
  readonly profile: FederationProfile;
  /** https_spiffe: the SPIFFE ID the endpoint's X.509-SVID must have. */
  readonly endpointSpiffeId: string | null;
  /** https_spiffe: the roots the endpoint's SVID must chain to (the peer's current bundle). */
  readonly trustAnchors: readonly Certificate[];
}

/** Resolves to the response body; rejects with a WritError whose code says what went wrong. */
export type BundleFetcher = (endpoint: BundleEndpoint, signal?: AbortSignal) => Promise<string>;

export interface FetchLimits {
  readonly timeoutMs: number;
  readonly maxBytes: number;
}

/** TLS verification failures: the endpoint is not who it should be (as opposed to unreachable). */
const AUTH_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME|SIGNATURE|ERR_TLS_|HOSTNAME|DEPTH_ZERO/;

/** The SPIFFE IDs (URI SANs) of a peer certificate. */
function uriSans(cert: PeerCertificate): string[] {
  return (cert.subjectaltname ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/** The real fetcher: node:https with a fresh connection per fetch (trust anchors change between fetches). */
export function httpsBundleFetcher(limits: FetchLimits): BundleFetcher {
  return (endpoint, signal) =>
    new Promise<string>((resolve, reject) => {
      const fail = (code: string, message: string): void => {
        req.destroy();
        reject(new WritError(code, message));
      };
      const spiffe = endpoint.profile === 'https_spiffe';
      if (spiffe && endpoint.trustAnchors.length === 0) {
        reject(
          new WritError(
            'ERR_BUNDLE_ENDPOINT_AUTH',
            `no bundle of the trust domain of ${endpoint.endpointSpiffeId} is held to authenticate the endpoint with (give a bootstrap bundle, or federate with that trust domain)`,
          ),
        );
        return;
      }
      const req = request(endpoint.url, {
        method: 'GET',
        agent: false,
        ...(signal ? { signal } : {}),
        headers: { accept: 'application/json' },
        ...(spiffe
          ? {
              ca: certificatesToPem(endpoint.trustAnchors),
              // The endpoint is known by its SPIFFE ID, not its host name (section 5.2.2).
              checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
                const ids = uriSans(cert);
                if (ids.length === 1 && ids[0] === endpoint.endpointSpiffeId) return undefined;
                return Object.assign(new Error(`the endpoint presented ${ids.join(', ') || 'no SPIFFE ID'}, not ${endpoint.endpointSpiffeId}`), {
                  code: 'ERR_TLS_CERT_ALTNAME_INVALID',
                });
              },
            }
          : {}),
      });
      const timer = setTimeout(() => fail('ERR_BUNDLE_ENDPOINT_TIMEOUT', `no complete answer within ${limits.timeoutMs / 1000}s`), limits.timeoutMs);
      timer.unref();
      req.once('close', () => clearTimeout(timer));
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const code = err.code ?? '';
        if (code === 'ABORT_ERR') reject(new WritError('ERR_BUNDLE_ENDPOINT_UNREACHABLE', 'the fetch was cancelled: the server is stopping'));
        else if (AUTH_ERRORS.test(code))
          reject(new WritError('ERR_BUNDLE_ENDPOINT_AUTH', `the endpoint failed authentication (${endpoint.profile}): ${err.message}`));
        else reject(new WritError('ERR_BUNDLE_ENDPOINT_UNREACHABLE', `cannot reach the bundle endpoint: ${code || err.message}`));
      });
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400)
          return fail('ERR_BUNDLE_ENDPOINT_REDIRECT', `the endpoint answered a redirect (${status}); redirects are not followed`);
        if (status !== 200) return fail('ERR_BUNDLE_ENDPOINT_STATUS', `the endpoint answered HTTP ${status}`);
        const declared = Number(res.headers['content-length'] ?? 0);
        if (declared > limits.maxBytes) return fail('ERR_BUNDLE_ENDPOINT_TOO_LARGE', `the bundle is larger than ${limits.maxBytes} bytes`);
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > limits.maxBytes) return fail('ERR_BUNDLE_ENDPOINT_TOO_LARGE', `the bundle is larger than ${limits.maxBytes} bytes`);
          chunks.push(chunk);
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve(Buffer.concat(chunks).toString('utf8'));
        });
        res.on('error', (err) => fail('ERR_BUNDLE_ENDPOINT_UNREACHABLE', `the answer broke off: ${err.message}`));
        return undefined;
      });
      req.end();
    });
}
