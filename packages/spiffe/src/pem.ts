import { WritError } from './errors.ts';

/** Encodes DER bytes as one PEM block. */
export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  let out = `-----BEGIN ${label}-----\n`;
  for (let i = 0; i < b64.length; i += 64) out += `${b64.slice(i, i + 64)}\n`;
  return `${out}-----END ${label}-----\n`;
}

/** Every PEM block of the given label, in order. Text outside blocks is ignored, as openssl does. */
export function fromPem(pem: string, label: string, maxBlocks = 1000): Buffer[] {
  if (typeof pem !== 'string') throw new TypeError('PEM must be a string');
  const out: Buffer[] = [];
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`, 'g');
  for (const m of pem.matchAll(re)) {
    if (out.length >= maxBlocks) throw new WritError('ERR_X509_MALFORMED', `more than ${maxBlocks} PEM blocks`);
    const der = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
    if (der.length === 0) throw new WritError('ERR_X509_MALFORMED', `empty ${label} PEM block`);
    out.push(der);
  }
  return out;
}
