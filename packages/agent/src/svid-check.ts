/** Checks an SVID the server sent before the agent stores or serves it. */
import type { KeyObject } from 'node:crypto';
import { WritError, parseCertificatesPem, verifyX509Svid, type Certificate, type TrustBundle } from '@writ/spiffe';

/**
 * The chain in `pem`, once it is an X.509-SVID that chains to `bundle`, names a SPIFFE ID
 * `expected` accepts (`wanted` describes it), and certifies `key` (the public half of the key the agent generated).
 * Throws ERR_REQUEST_FAILED saying what was wrong; `what` names the answer ("attestation").
 */
export function checkSvidAnswer(
  pem: string,
  opts: {
    readonly bundle: TrustBundle;
    readonly key: KeyObject;
    readonly expected: (id: string) => boolean;
    readonly wanted: string;
    readonly now: number;
    readonly what: string;
  },
): Certificate[] {
  const bad = (why: string): never => {
    throw new WritError('ERR_REQUEST_FAILED', `the server's ${opts.what} answer was refused: ${why}`);
  };
  if (pem === '') return bad('it carries no SVID');
  let chain: Certificate[] = [];
  try {
    chain = parseCertificatesPem(pem);
  } catch (err) {
    bad(`its SVID is not a certificate chain (${(err as Error).message})`);
  }
  if (chain.length === 0) bad('it carries no SVID');
  let id = '';
  try {
    id = verifyX509Svid(chain, new Map([[opts.bundle.trustDomain, opts.bundle]]), new Date(opts.now)).spiffeId.uri;
  } catch (err) {
    bad((err as Error).message);
  }
  if (!opts.expected(id)) bad(`its SVID names ${id.slice(0, 200)}, expected ${opts.wanted}`);
  if (!chain[0]!.spki.equals(opts.key.export({ format: 'der', type: 'spki' }))) bad('its SVID is not for the key this agent generated');
  return chain;
}
