/** Standard base64 (RFC 4648 section 4) decoding that refuses anything but the one canonical form. */
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The bytes of canonical padded base64 `s`, or undefined for anything else (whitespace, URL alphabet, stray bits). */
export function decodeBase64(s: string): Uint8Array | undefined {
  if (!B64.test(s)) return undefined;
  const b = Buffer.from(s, 'base64');
  if (b.toString('base64') !== s) return undefined;
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

export function encodeBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64');
}
