/** Private keys on disk: PKCS#8 PEM, mode 0600, optionally encrypted with a key-encryption passphrase. */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { WritError, keyTypeOf, type KeyType, type Signer } from '@writ/spiffe';

export function generateSigner(keyType: KeyType): Signer & { publicKey: KeyObject } {
  const pair =
    keyType === 'rsa-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: keyType === 'ec-p256' ? 'P-256' : 'P-384' });
  return { key: pair.privateKey, publicKey: pair.publicKey, keyType };
}

/** Writes atomically (temp file + rename) so a crash never leaves half a key. */
export function writePrivateKey(path: string, key: KeyObject, kek: string | undefined): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const pem = kek ? key.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: kek }) : key.export({ format: 'pem', type: 'pkcs8' });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, pem, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export function readPrivateKey(path: string, kek: string | undefined): Signer {
  const key = readKeyObject(path, kek);
  return { key, keyType: keyTypeOf(key) };
}

/** Any private key file (the audit log's Ed25519 key too), decrypted with the KEK when it is encrypted. */
export function readKeyObject(path: string, kek: string | undefined): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new WritError('ERR_KEY_INVALID', `cannot read key file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
  const encrypted = pem.includes('ENCRYPTED PRIVATE KEY');
  if (encrypted && !kek) throw new WritError('ERR_KEY_INVALID', `key file ${path} is encrypted; give the key-encryption key (WRIT_KEK or --kek-file)`);
  let key: KeyObject;
  try {
    key = createPrivateKey(encrypted ? { key: pem, passphrase: kek! } : { key: pem });
  } catch {
    // The OpenSSL message can quote the passphrase context; keep ours generic.
    throw new WritError(
      'ERR_KEY_INVALID',
      encrypted ? `cannot decrypt key file ${path} (wrong key-encryption key?)` : `key file ${path} is not a PEM private key`,
    );
  }
  return key;
}
