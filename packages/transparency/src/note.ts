/**
 * C2SP signed notes with Ed25519 keys, in the key formats of golang.org/x/mod/sumdb/note:
 *   signer   PRIVATE+KEY+<name>+<hash hex8>+<base64(0x01 || 32-byte seed)>
 *   verifier <name>+<hash hex8>+<base64(0x01 || 32-byte public key)>
 * where hash = the first 4 bytes (big endian) of SHA-256(name || "\n" || 0x01 || public key).
 * Signature lines are "— <name> <base64(hash || signature)>" after a blank line. Key strings
 * never appear in an error message.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { decodeBase64, encodeBase64 } from './base64.ts';
import { TransparencyError } from './errors.ts';
import { hasBadChars } from './text.ts';
import { sha256 } from './merkle.ts';

export interface NoteSigner {
  name: string;
  keyHash: number;
  sign(msg: Uint8Array): Uint8Array;
}

export interface NoteVerifier {
  name: string;
  keyHash: number;
  verify(msg: Uint8Array, sig: Uint8Array): boolean;
}

/** A note longer than this is refused before it is split. */
export const MAX_NOTE_BYTES = 64 * 1024;
/** At most this many signature lines (C2SP: verifiers must accept at least 16). */
export const MAX_NOTE_SIGNATURES = 100;

const ALG_ED25519 = 0x01;
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');
const EM_DASH_PREFIX = '\u2014 ';
const HEX8 = /^[0-9a-fA-F]{8}$/;

function keyError(message: string): TransparencyError {
  return new TransparencyError('ERR_AUDIT_KEY_INVALID', message);
}

function sigError(message: string): TransparencyError {
  return new TransparencyError('ERR_AUDIT_SIGNATURE_INVALID', message);
}

/** A key name: non-empty, no Unicode space, no `+` (C2SP signed-note), no control character. */
export function isValidKeyName(name: string): boolean {
  return typeof name === 'string' && name.length > 0 && name.length <= 1024 && !/[\s+\u0085]/u.test(name) && !hasBadChars(name);
}

/** The key ID: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), big endian. */
export function noteKeyHash(name: string, publicKey: Uint8Array): number {
  const n = Buffer.from(`${name}\n`);
  const h = sha256(Buffer.concat([n, Buffer.from([ALG_ED25519]), publicKey]));
  return Buffer.from(h.buffer, h.byteOffset, 4).readUInt32BE(0);
}

const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

function privateKeyOf(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });
}

function publicKeyOf(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: 'der', type: 'spki' });
}

function rawPublicKey(key: KeyObject): Uint8Array {
  const der = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - 32));
}

/** A new Ed25519 note key pair: `skey` is secret (for noteSigner), `vkey` public (for noteVerifier). */
export function generateNoteKey(name: string): { skey: string; vkey: string } {
  if (!isValidKeyName(name)) throw keyError('a key name is non-empty and holds no space or "+"');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const seed = pkcs8.subarray(pkcs8.length - 32);
  const pub = rawPublicKey(publicKey);
  const hash = hex8(noteKeyHash(name, pub));
  return {
    skey: `PRIVATE+KEY+${name}+${hash}+${encodeBase64(Buffer.concat([Buffer.from([ALG_ED25519]), seed]))}`,
    vkey: `${name}+${hash}+${encodeBase64(Buffer.concat([Buffer.from([ALG_ED25519]), pub]))}`,
  };
}

/** Splits "<name>+<hash>+<base64>" into its parts, checking the name, the hash and the algorithm. */
function keyParts(s: string, what: string): { name: string; hash: number; key: Uint8Array } {
  // The base64 key may hold a '+'; the name and the hash cannot.
  const a = s.indexOf('+');
  const b = a < 0 ? -1 : s.indexOf('+', a + 1);
  if (b < 0) throw keyError(`a ${what} key has the form <name>+<hash>+<key>`);
  const name = s.slice(0, a);
  const hash16 = s.slice(a + 1, b);
  const key64 = s.slice(b + 1);
  if (!isValidKeyName(name)) throw keyError(`the ${what} key's name is empty or holds a space`);
  if (!HEX8.test(hash16)) throw keyError(`the ${what} key's hash is not 8 hex digits`);
  const key = decodeBase64(key64);
  if (key === undefined || key.length !== 33) throw keyError(`the ${what} key is not the base64 of an algorithm byte and 32 key bytes`);
  if (key[0] !== ALG_ED25519) throw keyError(`the ${what} key's algorithm is not Ed25519 (0x01)`);
  return { name, hash: Number.parseInt(hash16, 16), key: key.subarray(1) };
}

/** The signer of a `PRIVATE+KEY+...` string (as golang.org/x/mod/sumdb/note's NewSigner reads it). */
export function noteSigner(skey: string): NoteSigner {
  if (typeof skey !== 'string' || skey.length > 4096) throw keyError('a signer key is a PRIVATE+KEY+... string');
  if (!skey.startsWith('PRIVATE+KEY+')) throw keyError('a signer key starts with PRIVATE+KEY+');
  const { name, hash, key } = keyParts(skey.slice('PRIVATE+KEY+'.length), 'signer');
  const priv = privateKeyOf(key);
  if (noteKeyHash(name, rawPublicKey(createPublicKey(priv))) !== hash) throw keyError("the signer key's hash does not match its name and key");
  return {
    name,
    keyHash: hash,
    sign: (msg) => new Uint8Array(sign(null, msg, priv)),
  };
}

/** The verifier of a `<name>+<hash>+<key>` string (as golang.org/x/mod/sumdb/note's NewVerifier reads it). */
export function noteVerifier(vkey: string): NoteVerifier {
  if (typeof vkey !== 'string' || vkey.length > 4096) throw keyError('a verifier key is a <name>+<hash>+<key> string');
  const { name, hash, key } = keyParts(vkey, 'verifier');
  if (noteKeyHash(name, key) !== hash) throw keyError("the verifier key's hash does not match its name and key");
  let pub: KeyObject;
  try {
    pub = publicKeyOf(key);
  } catch {
    throw keyError('the verifier key is not an Ed25519 public key');
  }
  return {
    name,
    keyHash: hash,
    verify: (msg, sig) => {
      if (sig.length !== 64) return false;
      try {
        return verify(null, msg, pub, sig);
      } catch {
        return false;
      }
    },
  };
}

function checkText(text: string, what: string): void {
  if (hasBadChars(text)) throw sigError(`the ${what} holds a control character or is not UTF-8`);
}

/** `text` (ending in a newline) signed by each signer: text, a blank line, one "— name sig" line per signer. */
export function signNote(text: string, ...signers: NoteSigner[]): string {
  if (typeof text !== 'string' || !text.endsWith('\n')) throw sigError('a note text ends with a newline');
  if (Buffer.byteLength(text) > MAX_NOTE_BYTES) throw sigError(`a note is at most ${MAX_NOTE_BYTES} bytes`);
  checkText(text, 'note text');
  if (signers.length === 0) throw sigError('a note has at least one signature');
  const msg = Buffer.from(text);
  let out = `${text}\n`;
  for (const s of signers) {
    if (!isValidKeyName(s.name) || !Number.isInteger(s.keyHash) || s.keyHash < 0 || s.keyHash > 0xffffffff)
      throw keyError('a signer has a valid key name and a 32-bit key hash');
    const id = Buffer.alloc(4);
    id.writeUInt32BE(s.keyHash, 0);
    out += `${EM_DASH_PREFIX}${s.name} ${encodeBase64(Buffer.concat([id, s.sign(msg)]))}\n`;
  }
  return out;
}

/**
 * Opens a signed note: checks its size first, its form, and every signature of a known key
 * (name and key hash both match a verifier). Signatures of unknown keys are ignored, repeated
 * ones counted once; one known signature that fails rejects the note, and so does a note with
 * no known signature at all. Throws ERR_AUDIT_SIGNATURE_INVALID.
 */
export function openNote(note: string, verifiers: readonly NoteVerifier[]): { text: string; verifiedBy: string[] } {
  if (typeof note !== 'string') throw sigError('a note is a text');
  if (note.length > MAX_NOTE_BYTES || Buffer.byteLength(note) > MAX_NOTE_BYTES) throw sigError(`a note is at most ${MAX_NOTE_BYTES} bytes`);
  checkText(note, 'note');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw sigError('a note has its signatures after a blank line');
  const text = note.slice(0, split + 1);
  let sigs = note.slice(split + 2);
  if (sigs.length === 0 || !sigs.endsWith('\n')) throw sigError('a note ends with a signature line and a newline');
  const msg = Buffer.from(text);
  const seen = new Set<string>();
  const verifiedBy: string[] = [];
  let count = 0;
  while (sigs.length > 0) {
    const nl = sigs.indexOf('\n');
    const line = sigs.slice(0, nl);
    sigs = sigs.slice(nl + 1);
    if (++count > MAX_NOTE_SIGNATURES) throw sigError(`a note has at most ${MAX_NOTE_SIGNATURES} signatures`);
    if (!line.startsWith(EM_DASH_PREFIX)) throw sigError('a signature line starts with an em dash (U+2014) and a space');
    const rest = line.slice(EM_DASH_PREFIX.length);
    const sp = rest.lastIndexOf(' ');
    const name = sp < 0 ? rest : rest.slice(0, sp);
    const b64 = sp < 0 ? '' : rest.slice(sp + 1);
    const sig = decodeBase64(b64);
    if (!isValidKeyName(name) || sig === undefined || sig.length < 5) throw sigError('a signature line is "— <key name> <base64 signature>"');
    const hash = Buffer.from(sig.buffer, sig.byteOffset, 4).readUInt32BE(0);
    const v = verifiers.find((k) => k.name === name && k.keyHash === hash);
    if (v === undefined) continue;
    const id = `${name}+${hex8(hash)}`;
    if (seen.has(id)) continue;
    seen.add(id);
    if (!v.verify(msg, sig.subarray(4))) throw sigError(`the signature of ${name} does not verify`);
    verifiedBy.push(name);
  }
  if (verifiedBy.length === 0) throw sigError('the note carries no signature of a known key');
  return { text, verifiedBy };
}
