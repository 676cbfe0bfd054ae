/**
 * SPIFFE-aware TLS on node:tls. Peers are verified by the X.509-SVID rules (each SPIFFE ID against
 * its own trust domain's bundle, never a merged pool), then authorized by SPIFFE ID. After a
 * rotation new connections use the new SVID; live ones keep theirs.
 */
import { connect as tlsConnect, createServer as tlsCreateServer, type DetailedPeerCertificate, type Server, type TLSSocket, type TlsOptions } from 'node:tls';
import { WritError, parseCertificate, parseTrustDomain, verifyX509Svid, type Certificate, type SpiffeId } from '@writ/spiffe';
import type { AuthzRequest, Decision } from '@writ/policy';
import type { X509Source } from './sources.ts';

export type Authorizer = (id: SpiffeId) => boolean;

export const authorizeAny = (): Authorizer => () => true;
export const authorizeId =
  (...ids: string[]): Authorizer =>
  (id) =>
    ids.includes(id.uri);
export function authorizeMemberOf(trustDomain: string): Authorizer {
  parseTrustDomain(trustDomain);
  return (id) => id.trustDomain === trustDomain;
}

/** The peer's chain as the TLS layer received it, leaf first. */
export function peerChain(socket: TLSSocket): Certificate[] {
  const out: Certificate[] = [];
  let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true) as DetailedPeerCertificate;
  while (c?.raw && out.length < 8) {
    out.push(parseCertificate(c.raw));
    if (!c.issuerCertificate || c.issuerCertificate === c || c.issuerCertificate.raw.equals(c.raw)) break;
    c = c.issuerCertificate;
  }
  return out;
}

/** Verifies and authorizes the peer of a finished handshake; returns its SPIFFE ID. */
export function verifyPeer(socket: TLSSocket, source: X509Source, authorize: Authorizer): SpiffeId {
  const chain = peerChain(socket);
  if (chain.length === 0) throw new WritError('ERR_X509_SVID_INVALID', 'the peer presented no certificate');
  const { spiffeId } = verifyX509Svid(chain, source.bundles);
  if (!authorize(spiffeId)) throw new WritError('ERR_FORBIDDEN', `peer ${spiffeId.uri} is not authorized`);
  return spiffeId;
}

const peers = new WeakMap<TLSSocket, SpiffeId>();
/** The verified SPIFFE ID of a connection made or accepted by these helpers. */
export const peerIdOf = (socket: TLSSocket): SpiffeId | undefined => peers.get(socket);

/** What createMtlsServer needs of a LocalPolicy (structural, so this module does not import authz.ts, which imports it). */
export interface QuarantineSource {
  decide(req: AuthzRequest): Decision;
  onUpdate(fn: () => void): () => void;
}

export interface MtlsServerOptions extends Omit<TlsOptions, 'key' | 'cert' | 'ca' | 'requestCert' | 'rejectUnauthorized'> {
  readonly source: X509Source;
  readonly authorize: Authorizer;
  /** With the policy the agent streams: connections from or to a quarantined identity are refused, live ones closed. */
  readonly policy?: QuarantineSource;
}

/**
 * A TLS server that presents the workload's current SVID and accepts only peers with a valid,
 * authorized X.509-SVID. `onConnection` gets authorized connections only; `server.on('rejected')`
 * reports the others. While the source's identity is withdrawn (see X509Source) every live
 * connection is closed and new ones are refused.
 */
export function createMtlsServer(opts: MtlsServerOptions, onConnection: (socket: TLSSocket, peer: SpiffeId) => void): Server {
  const { source, authorize, policy, ...tls } = opts;
  const server = tlsCreateServer({ ...tls, ...source.tlsCredentials(), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
  const rotate = (): void => server.setSecureContext({ ...source.tlsCredentials(), minVersion: 'TLSv1.2' });
  const quarantined = (peer: SpiffeId): boolean =>
    policy?.decide({ from: peer.uri, to: source.svid.spiffeId, action: { kind: 'tcp', port: 0 } }).reason === 'QUARANTINED';
  const live = new Map<TLSSocket, SpiffeId>();
  const recheck = (): void => {
    for (const [socket, peer] of live) if (quarantined(peer)) socket.destroy();
  };
  const withdrawn = (): void => {
    for (const socket of live.keys()) socket.destroy();
  };
  source.on('update', rotate);
  source.on('withdrawn', withdrawn);
  const stopWatching = policy?.onUpdate(recheck);
  server.on('close', () => (source.off('update', rotate), source.off('withdrawn', withdrawn), stopWatching?.()));
  server.on('secureConnection', (socket: TLSSocket) => {
    try {
      if (source.withdrawn) throw new WritError('ERR_FORBIDDEN', `this workload's identity ${source.svid.spiffeId} was withdrawn by the agent`);
      const id = verifyPeer(socket, source, authorize);
      if (quarantined(id)) throw new WritError('ERR_FORBIDDEN', `peer ${id.uri} or this workload is quarantined`);
      peers.set(socket, id);
      live.set(socket, id);
      socket.once('close', () => live.delete(socket));
      onConnection(socket, id);
    } catch (err) {
      server.emit('rejected', err, socket);
      socket.destroy();
    }
  });
  server.on('tlsClientError', (_e, socket) => socket.destroy());
  return server;
}

export interface MtlsConnectOptions {
  readonly source: X509Source;
  readonly authorize: Authorizer;
  readonly host: string;
  readonly port: number;
  readonly servername?: string;
  /** Protocols to offer in ALPN (none by default). */
  readonly alpn?: readonly string[];
  /**
   * Receives the decrypted bytes instead of 'data' events (Node's `onread`: no buffer allocation
   * and no stream machinery per read, for proxies). Each chunk is the caller's to keep.
   */
  readonly onData?: (chunk: Buffer) => void;
}

/** One read buffer for every `onData` connection: reads are handed over synchronously and copied out. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** Connects with the current SVID; resolves only once the server's SVID is verified and authorized. Refused while the identity is withdrawn. */
export function mtlsConnect(opts: MtlsConnectOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    if (opts.source.withdrawn)
      throw new WritError(
        'ERR_FORBIDDEN',
        `this workload's identity ${opts.source.svid.spiffeId} was withdrawn by the agent: it connects nowhere until one is issued again`,
      );
    const socket = tlsConnect({
      host: opts.host,
      port: opts.port,
      ...opts.source.tlsCredentials(),
      minVersion: 'TLSv1.2',
      // Web PKI checks do not apply: the SPIFFE checks below replace them.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      ...(opts.servername ? { servername: opts.servername } : {}),
      ...(opts.alpn ? { ALPNProtocols: [...opts.alpn] } : {}),
      ...(opts.onData ? { onread: { buffer: READ_BUFFER, callback: (n: number, b: Uint8Array) => (opts.onData!(Buffer.from(b.subarray(0, n))), true) } } : {}),
    });
    socket.once('secureConnect', () => {
      try {
        peers.set(socket, verifyPeer(socket, opts.source, opts.authorize));
        resolve(socket);
      } catch (err) {
        socket.destroy();
        reject(err);
      }
    });
    socket.once('error', reject);
  });
}
