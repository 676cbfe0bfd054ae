/**
 * Writ's own SPIFFE bundle endpoint (SPIFFE_Federation.md section 5) on a listener of its own:
 * `https_spiffe` serves with the server's X.509-SVID (spiffe://TD/writ/server), renewed at half
 * life; `https_web` with a certificate and key from files, re-read when they change. Every path
 * answers GET with the bundle, its `spiffe_sequence` (grows on every change of the CA journal) and
 * `spiffe_refresh_hint` (derived from the CA lifetime: see `refreshHintSeconds`).
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { WritError, formatBundleJson } from '@writ/spiffe';
import type { CertificateAuthority } from '../ca/ca.ts';
import type { BundleEndpointConfig } from '../config.ts';

export interface BundleEndpointListener {
  readonly server: Server;
  readonly url: string;
  /** The endpoint SPIFFE ID peers configure (https_spiffe), or null (https_web). */
  readonly spiffeId: string | null;
  /** https_spiffe: a new SVID past half life; https_web: the files again if they changed. */
  renew(): void;
}

export interface BundleEndpointDeps {
  readonly ca: CertificateAuthority;
  readonly clock: () => number;
  readonly log: Logger;
  readonly issueTls: (listenHost: string, dnsNames: readonly string[]) => { key: string; cert: string; expiresAt: number };
  readonly renewAfterMs: number;
}

function readPem(file: string, field: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, { field });
  }
}

export async function listenBundleEndpoint(c: BundleEndpointConfig, d: BundleEndpointDeps): Promise<BundleEndpointListener> {
  let expiresAt = 0;
  let files = '';
  let refused = '';
  const identity = (): { key: string; cert: string } => {
    if (c.profile === 'https_web') {
      const cert = readPem(c.certFile!, 'bundleEndpointCert');
      const key = readPem(c.keyFile!, 'bundleEndpointKey');
      files = cert + key;
      return { key, cert };
    }
    const tls = d.issueTls(c.host, []);
    expiresAt = tls.expiresAt;
    return { key: tls.key, cert: tls.cert };
  };
  let server: Server;
  try {
    server = createServer({ ...identity(), minVersion: 'TLSv1.2', handshakeTimeout: 10_000 }, (req, res) => {
      req.resume();
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET', 'content-type': 'application/json' });
        return void res.end(`${JSON.stringify({ code: 'ERR_METHOD_NOT_ALLOWED', message: `${req.method} is not allowed here; allowed: GET` })}\n`);
      }
      let body: string;
      try {
        body = JSON.stringify(formatBundleJson(d.ca.bundle()));
      } catch {
        res.writeHead(503, { 'content-type': 'application/json' });
        return void res.end(`${JSON.stringify({ code: 'ERR_CA_UNAVAILABLE', message: 'the CA is not initialised' })}\n`);
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  } catch (err) {
    if (err instanceof WritError) throw err;
    throw new WritError('ERR_CONFIG_INVALID', `bundleEndpointCert: the certificate and key do not make a TLS identity: ${(err as Error).message}`, {
      field: 'bundleEndpointCert',
    });
  }
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('tlsClientError', (err, socket) => {
    d.log.debug({ err: err.message }, 'bundle endpoint TLS handshake failed');
    socket.destroy();
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolveListen, rejectListen) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      rejectListen(new WritError('ERR_CONFIG_INVALID', `cannot listen on ${c.host}:${c.port}: ${err.code ?? err.message}`, { field: 'bundleEndpointListen' })),
    );
    server.listen(c.port, c.host, () => resolveListen());
  });
  const addr = server.address();
  const host = c.host === '0.0.0.0' || c.host === '::' ? '127.0.0.1' : c.host;
  const url = `https://${isIP(host) === 6 ? `[${host}]` : host}:${typeof addr === 'object' && addr ? addr.port : c.port}/`;
  const spiffeId = c.profile === 'https_spiffe' ? `spiffe://${d.ca.trustDomain}/writ/server` : null;
  d.log.info({ url, profile: c.profile, ...(spiffeId ? { endpointSpiffeId: spiffeId } : {}) }, 'bundle endpoint listening');
  return {
    server,
    url,
    spiffeId,
    renew: () => {
      if (c.profile === 'https_spiffe') {
        if (d.clock() > expiresAt - d.renewAfterMs) server.setSecureContext({ ...identity(), minVersion: 'TLSv1.2' });
        return;
      }
      let cert: string;
      let key: string;
      try {
        cert = readPem(c.certFile!, 'bundleEndpointCert');
        key = readPem(c.keyFile!, 'bundleEndpointKey');
      } catch (err) {
        return void d.log.warn({ err: (err as Error).message }, 'bundle endpoint: cannot re-read the certificate files; keeping the current ones');
      }
      // A pair caught half-written is refused once and tried again when the files change again.
      if (cert + key === files || cert + key === refused) return;
      try {
        server.setSecureContext({ cert, key, minVersion: 'TLSv1.2' });
        files = cert + key;
        d.log.info('bundle endpoint: certificate files changed; serving the new certificate');
      } catch (err) {
        refused = cert + key;
        d.log.warn({ err: (err as Error).message }, 'bundle endpoint: the new certificate files are not usable; keeping the current ones');
      }
    },
  };
}
