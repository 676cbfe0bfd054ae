/** Authenticating agents on the agent routes: the TLS client certificate must be the current SVID of a live, unbanned agent. */
import type { IncomingMessage } from 'node:http';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { WritError, parseCertificate, verifyX509Svid, type Certificate, type TrustBundle } from '@writ/spiffe';
import type { Store } from '../store/types.ts';

/** One per server: it remembers which of its TLS connections presented a verified agent SVID. */
export class AgentAuthenticator {
  readonly #store: Store;
  readonly #ca: { readonly trustDomain: string; bundle(): TrustBundle };
  /** Per TLS connection: its client certificate was verified once (it cannot change on the connection). */
  readonly #verified = new WeakMap<TLSSocket, { id: string; serial: string; notAfter: number; bundleSequence: number | undefined }>();

  constructor(store: Store, ca: { readonly trustDomain: string; bundle(): TrustBundle }) {
    this.#store = store;
    this.#ca = ca;
  }

  /** The calling agent's SPIFFE ID; ERR_UNAUTHENTICATED or ERR_FORBIDDEN otherwise. */
  async authenticate(req: IncomingMessage): Promise<string> {
    const sock = req.socket as TLSSocket;
    const ca = this.#ca;
    const known = this.#verified.get(sock);
    // Chain verification is the expensive part: redo it only when the connection is new, the
    // certificate has expired or the bundle changed. The store record is checked on every request.
    if (known && known.notAfter > Date.now() && known.bundleSequence === ca.bundle().sequence) {
      await this.#current(known.id, known.serial);
      return known.id;
    }
    const chain: Certificate[] = [];
    let peer: DetailedPeerCertificate | undefined = sock.getPeerCertificate?.(true) as DetailedPeerCertificate | undefined;
    while (peer?.raw && chain.length < 8) {
      chain.push(parseCertificate(peer.raw));
      if (!peer.issuerCertificate || peer.issuerCertificate === peer || peer.issuerCertificate.raw.equals(peer.raw)) break;
      peer = peer.issuerCertificate;
    }
    if (chain.length === 0) throw new WritError('ERR_UNAUTHENTICATED', "agent endpoints need the agent's X.509-SVID as TLS client certificate");
    let id: string;
    try {
      id = verifyX509Svid(chain, new Map([[ca.trustDomain, ca.bundle()]])).spiffeId.uri;
    } catch (err) {
      throw new WritError('ERR_UNAUTHENTICATED', `client certificate rejected: ${(err as Error).message}`);
    }
    if (!id.startsWith(`spiffe://${ca.trustDomain}/writ/agent/`)) throw new WritError('ERR_FORBIDDEN', `${id} is not an agent identity`);
    await this.#current(id, chain[0]!.serialHex);
    this.#verified.set(sock, { id, serial: chain[0]!.serialHex, notAfter: chain[0]!.notAfter.getTime(), bundleSequence: ca.bundle().sequence });
    return id;
  }

  /** The agent's record must exist, be unbanned, and name this SVID (a renewal supersedes the old one). */
  async #current(id: string, serial: string): Promise<void> {
    const agent = await this.#store.getAgent(id);
    if (!agent) throw new WritError('ERR_UNAUTHENTICATED', `agent ${id} is not attested (evicted?); it must attest again`);
    if (agent.banned) throw new WritError('ERR_FORBIDDEN', `agent ${id} is banned`);
    if (agent.serial !== serial) throw new WritError('ERR_UNAUTHENTICATED', `agent ${id} presented a superseded SVID; it must attest again`);
  }
}
