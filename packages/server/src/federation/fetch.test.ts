/** The bundle fetcher against real HTTPS servers: https_spiffe authentication (and CA rotation), limits, failures. */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { OID, buildName, certificatesToPem, isWritError, issueCertificate, toPem, type Certificate } from '@writ/spiffe';
import { generateSigner } from '../ca/keys.ts';
import { httpsBundleFetcher, type BundleEndpoint } from './fetch.ts';

const H = 3_600_000;
type Signer = ReturnType<typeof generateSigner>;

function newCa(name: string): { cert: Certificate; signer: Signer } {
  const signer = generateSigner('ec-p256');
  const cert = issueCertificate(
    {
      subject: buildName([[OID.commonName, name]]),
      spki: signer.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - H),
      notAfter: new Date(Date.now() + H),
      ca: true,
      uris: ['spiffe://peer.test'],
    },
    { cert: undefined, signer },
  );
  return { cert, signer };
}

function svid(ca: { cert: Certificate; signer: Signer }, spiffeId: string): { cert: string; key: string } {
  const k = generateSigner('ec-p256');
  const leaf = issueCertificate(
    {
      subject: buildName([]),
      spki: k.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - H),
      notAfter: new Date(Date.now() + H),
      ca: false,
      uris: [spiffeId],
    },
    ca,
  );
  return { cert: certificatesToPem([leaf]), key: toPem('PRIVATE KEY', k.key.export({ format: 'der', type: 'pkcs8' })) };
}

const ENDPOINT_ID = 'spiffe://peer.test/bundle-server';

describe('bundle fetcher', () => {
  const oldCa = newCa('old');
  const newCaPair = newCa('new');
  let server: Server;
  let url = '';
  let answer: (res: import('node:http').ServerResponse) => void = (res) => void res.end('{"keys":[]}');
  const fetch = httpsBundleFetcher({ timeoutMs: 500, maxBytes: 1024 });
  const spiffe = (anchors: Certificate[], id = ENDPOINT_ID): BundleEndpoint => ({ url, profile: 'https_spiffe', endpointSpiffeId: id, trustAnchors: anchors });

  before(async () => {
    server = createServer({ ...svid(oldCa, ENDPOINT_ID) }, (req, res) => {
      req.resume();
      answer(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const a = server.address();
    url = `https://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/bundle.json`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const refused = async (endpoint: BundleEndpoint, code: string, why: RegExp): Promise<void> =>
    assert.rejects(fetch(endpoint), (e) => isWritError(e, code) && why.test(e.message));

  it('https_spiffe: an SVID chained to the held bundle with the endpoint SPIFFE ID is accepted, whatever the host name', async () => {
    assert.equal(await fetch(spiffe([oldCa.cert])), '{"keys":[]}');
  });

  it('https_spiffe: after the peer rotates, only a held bundle with its new CA authenticates the endpoint', async () => {
    server.setSecureContext({ ...svid(newCaPair, ENDPOINT_ID) });
    await refused(spiffe([oldCa.cert]), 'ERR_BUNDLE_ENDPOINT_AUTH', /failed authentication \(https_spiffe\)/);
    assert.equal(await fetch(spiffe([oldCa.cert, newCaPair.cert])), '{"keys":[]}');
  });

  it('https_spiffe: another SPIFFE ID, or no bundle to check with, is refused', async () => {
    await refused(
      spiffe([oldCa.cert, newCaPair.cert], 'spiffe://peer.test/other'),
      'ERR_BUNDLE_ENDPOINT_AUTH',
      /presented spiffe:\/\/peer\.test\/bundle-server, not spiffe:\/\/peer\.test\/other/,
    );
    await refused(spiffe([]), 'ERR_BUNDLE_ENDPOINT_AUTH', /give a bootstrap bundle/);
  });

  it('https_web: a certificate the Web PKI does not vouch for is refused', async () => {
    await refused({ url, profile: 'https_web', endpointSpiffeId: null, trustAnchors: [] }, 'ERR_BUNDLE_ENDPOINT_AUTH', /https_web/);
  });

  it('limits: a body past the limit without a declared length, an answer that never ends, a redirect, a non-200', async () => {
    const anchors = [oldCa.cert, newCaPair.cert];
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no content-length
      for (let i = 0; i < 10; i++) res.write('x'.repeat(200));
      res.end();
    };
    await refused(spiffe(anchors), 'ERR_BUNDLE_ENDPOINT_TOO_LARGE', /larger than 1024 bytes/);
    answer = (res) => void res.writeHead(200).write('{"keys": ['); // and nothing more
    await refused(spiffe(anchors), 'ERR_BUNDLE_ENDPOINT_TIMEOUT', /within 0.5s/);
    answer = (res) => void res.writeHead(307, { location: 'https://elsewhere.test/' }).end();
    await refused(spiffe(anchors), 'ERR_BUNDLE_ENDPOINT_REDIRECT', /\(307\)/);
    answer = (res) => void res.writeHead(404).end();
    await refused(spiffe(anchors), 'ERR_BUNDLE_ENDPOINT_STATUS', /HTTP 404/);
  });

  it('a fetch in flight is cancelled when the server stops, without waiting for its timeout', async () => {
    answer = () => undefined; // never answers
    const stop = new AbortController();
    const pending = fetch(spiffe([oldCa.cert, newCaPair.cert]), stop.signal);
    setImmediate(() => stop.abort());
    await assert.rejects(pending, (e) => isWritError(e, 'ERR_BUNDLE_ENDPOINT_UNREACHABLE') && /cancelled/.test(e.message));
  });

  it('a port nobody listens on is unreachable', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const a = closed.address();
    await new Promise<void>((r) => closed.close(() => r()));
    const dead = `https://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`;
    await refused({ url: dead, profile: 'https_web', endpointSpiffeId: null, trustAnchors: [] }, 'ERR_BUNDLE_ENDPOINT_UNREACHABLE', /ECONNREFUSED/);
  });
});
