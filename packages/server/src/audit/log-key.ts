/**
 * The server's Ed25519 log key: kept in DATA_DIR like the CA's keys (PKCS#8 PEM, mode 0600,
 * wrapped by the KEK when one is given), and turned into the golang.org/x/mod/sumdb/note key
 * strings whose name is the log's origin.
 */
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { noteSigner, type NoteSigner } from '@writ/transparency';
import { readKeyObject, writePrivateKey } from '../ca/keys.ts';

export interface LogKey {
  readonly signer: NoteSigner;
  /** The verifier key, `<origin>+<hash>+<base64>`: what `writ audit verify` and Go's note.NewVerifier take. */
  readonly vkey: string;
}

export const logKeyPath = (dataDir: string): string => join(dataDir, 'keys', 'audit-log.pem');

/** The note key strings of an Ed25519 private key under `name` (hash: first 4 bytes of SHA-256(name "\n" 0x01 pubkey)). */
export function noteKeysOf(name: string, key: KeyObject): { skey: string; vkey: string } {
  const seed = key.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(-32);
  const tagged = (b: Uint8Array): Buffer => Buffer.concat([Buffer.of(1), b]);
  const hash = createHash('sha256').update(`${name}\n`).update(tagged(pub)).digest().subarray(0, 4).toString('hex');
  return { skey: `PRIVATE+KEY+${name}+${hash}+${tagged(seed).toString('base64')}`, vkey: `${name}+${hash}+${tagged(pub).toString('base64')}` };
}

/** Reads the log key from DATA_DIR, making it on first start. */
export function loadLogKey(dataDir: string, origin: string, kek: string | undefined): LogKey {
  const path = logKeyPath(dataDir);
  if (!existsSync(path)) writePrivateKey(path, generateKeyPairSync('ed25519').privateKey, kek);
  const key = readKeyObject(path, kek);
  const { skey, vkey } = noteKeysOf(origin, key);
  return { signer: noteSigner(skey), vkey };
}
