/** Keys the agent generates for itself and its workloads, and the CSRs that carry them. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createCsr, toPem } from '@writ/spiffe';

export interface KeyPair {
  readonly key: KeyObject;
  readonly pub: KeyObject;
}

export function generateKey(): KeyPair {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { key: k.privateKey, pub: k.publicKey };
}

export function csrFor(k: KeyPair): string {
  return toPem('CERTIFICATE REQUEST', createCsr({ key: k.key, keyType: 'ec-p256' }, k.pub));
}

export const keyPem = (k: KeyObject): string => k.export({ format: 'pem', type: 'pkcs8' }) as string;
