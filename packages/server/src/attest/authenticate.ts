/** Authenticating agents on the agent routes: the TLS client certificate must be the current SVID of a live, unbanned agent. */
import type { IncomingMessage } from 'node:http';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { WritError, parseCertificate, verifyX509Svid, type Certificate, type TrustBundle } from '@writ/spiffe';
import type { Store } from '../store/types.ts';

/** The CA as authentication needs it; `reload` reads the authorities' journal again. */
interface AuthenticatorCa {
  readonly trustDomain: string;
  bundle(): TrustBundle;
  reload?(): Promise<void>;
}

const rejected = (err: unknown): WritError => new WritError('ERR_UNAUTHENTICATED', `client certificate rejected: ${(err as Error).message}`);

/** Agents' records kept in memory at most; past it the memory starts again (and refills from reads). */
const MAX_RECORDS = 200_000;

/** One per server: it remembers which of its TLS connections presented a verified agent SVID. */
export class AgentAuthenticator {
  readonly #store: Store;
  readonly #ca: AuthenticatorCa;
  #reloadedAt = 0;
  /** Per TLS connection: its client certificate was verified once (it cannot change on the connection). */
  readonly #verified = new WeakMap<TLSSocket, { id: string; serial: string; notAfter: number; bundleSequence: number | undefined }>();

  /**
   * The agents' records as last read, while every change to them is heard (`heardAll`): each
   * request then checks its SVID against memory instead of a database read. A change names its
   * agent (a renewal, an eviction, a ban), which drops that one; one that names none drops all.
   */
  readonly #records = new Map<string, { serial: string; heard: number }>();
  /** Moves with every change heard: a read that raced one is not kept. */
  #changes = 0;
  readonly #heardAll: () => number | undefined;

  /**
   * `heardAll`: a number that stays the same while every write to the agents' records (this
   * server's and other replicas') reaches `store.onChange`, undefined while not (the change hub's).
   * Without it every request reads the agent's record.
   */
  constructor(store: Store, ca: AuthenticatorCa, heardAll: () => number | undefined = () => undefined) {
    this.#store = store;
    this.#ca = ca;
    this.#heardAll = heardAll;
    store.onChange((c) => {
      if (c.kind !== 'agents') return;
      this.#changes++;
      const named = [...(c.revoked ?? []), ...(c.renewed ?? [])];
      if (named.length === 0) this.#records.clear();
      for (const id of named) this.#records.delete(id);
    });
  }

  /** The calling agent's SPIFFE ID; ERR_UNAUTHENTICATED or ERR_FORBIDDEN otherwise. */
  async authenticate(req: IncomingMessage): Promise<string> {
    const sock = req.socket as TLSSocket;
    const ca = this.#ca;
    const known = this.#verified.get(sock);
    // Chain verification is the expensive part: redo it only when the connection is new, the
    // certificate has expired or the bundle changed. The agent's record is checked on every
    // request, in memory while every change to it is heard (`#current`).
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
      // Signed by an authority this server has not loaded yet (another replica's, heard of late):
      // the journal is read again, at most once a second, and the chain checked once more.
      if (!ca.reload || Date.now() - this.#reloadedAt < 1000) throw rejected(err);
      this.#reloadedAt = Date.now();
      await ca.reload().catch(() => undefined);
      try {
        id = verifyX509Svid(chain, new Map([[ca.trustDomain, ca.bundle()]])).spiffeId.uri;
      } catch (again) {
        throw rejected(again);
      }
    }
    if (!id.startsWith(`spiffe://${ca.trustDomain}/writ/agent/`)) throw new WritError('ERR_FORBIDDEN', `${id} is not an agent identity`);
    await this.#current(id, chain[0]!.serialHex);
    this.#verified.set(sock, { id, serial: chain[0]!.serialHex, notAfter: chain[0]!.notAfter.getTime(), bundleSequence: ca.bundle().sequence });
    return id;
  }

  /** The agent's record must exist, be unbanned, and name this SVID (a renewal supersedes the old one). */
  async #current(id: string, serial: string): Promise<void> {
    const heard = this.#heardAll();
    const known = this.#records.get(id);
    if (known && heard !== undefined && known.heard === heard && known.serial === serial) return;
    const changes = this.#changes;
    const agent = await this.#store.getAgent(id);
    if (!agent) throw new WritError('ERR_UNAUTHENTICATED', `agent ${id} is not attested (evicted?); it must attest again`);
    if (agent.banned) throw new WritError('ERR_FORBIDDEN', `agent ${id} is banned`);
    if (agent.serial !== serial) throw new WritError('ERR_UNAUTHENTICATED', `agent ${id} presented a superseded SVID; it must attest again`);
    // Kept only when nothing was heard meanwhile and the feed is the one it was before the read.
    if (heard !== undefined && changes === this.#changes && heard === this.#heardAll()) {
      if (this.#records.size >= MAX_RECORDS) this.#records.clear();
      this.#records.set(id, { serial, heard });
    }
  }
}
