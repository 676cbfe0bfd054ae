/**
 * C2SP tlog-checkpoint note texts: origin, tree size, base64 root hash, optional extension lines,
 * each line ending in a newline. The parser checks its size limits before splitting anything.
 */
import { decodeBase64, encodeBase64 } from './base64.ts';
import { TransparencyError } from './errors.ts';
import { hasBadChars } from './text.ts';
import { HASH_SIZE } from './merkle.ts';

export interface Checkpoint {
  /** The log's identity, e.g. `writ.example/audit`; also the name of the key that signs it. */
  origin: string;
  size: number;
  rootHash: Uint8Array;
  /** Opaque non-empty lines after the root hash (C2SP: NOT RECOMMENDED, kept for round trips). */
  extensions: string[];
}

/** A checkpoint text longer than this is refused before it is split. */
export const MAX_CHECKPOINT_BYTES = 16 * 1024;
/** At most this many extension lines. */
export const MAX_CHECKPOINT_EXTENSIONS = 32;

const SIZE = /^(?:0|[1-9][0-9]{0,15})$/;

function malformed(message: string): TransparencyError {
  return new TransparencyError('ERR_AUDIT_CHECKPOINT_MALFORMED', message);
}

function checkLine(line: string, what: string): void {
  if (line.length === 0) throw malformed(`the checkpoint's ${what} is empty`);
  if (line.includes('\n') || hasBadChars(line)) throw malformed(`the checkpoint's ${what} holds a control character or is not UTF-8`);
}

/** The note text of a checkpoint: "origin\nsize\nbase64(root)\n" then one line per extension. */
export function formatCheckpoint(c: Checkpoint): string {
  checkLine(c.origin, 'origin');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw malformed('the checkpoint size must be an integer between 0 and 2^53-1');
  if (!(c.rootHash instanceof Uint8Array) || c.rootHash.length !== HASH_SIZE) throw malformed(`the checkpoint root hash must be ${HASH_SIZE} bytes`);
  if (c.extensions.length > MAX_CHECKPOINT_EXTENSIONS) throw malformed(`a checkpoint has at most ${MAX_CHECKPOINT_EXTENSIONS} extension lines`);
  for (const e of c.extensions) checkLine(e, 'extension line');
  const text = `${[c.origin, String(c.size), encodeBase64(c.rootHash), ...c.extensions].join('\n')}\n`;
  if (Buffer.byteLength(text) > MAX_CHECKPOINT_BYTES) throw malformed(`a checkpoint is at most ${MAX_CHECKPOINT_BYTES} bytes`);
  return text;
}

/**
 * A checkpoint note text (the text of the signed note, not the note itself), strictly: at least
 * three non-empty lines, each ending in a newline, a size without leading zeros (up to 2^53-1),
 * a canonical base64 SHA-256 root. Throws ERR_AUDIT_CHECKPOINT_MALFORMED.
 */
export function parseCheckpoint(text: string): Checkpoint {
  if (typeof text !== 'string') throw malformed('a checkpoint is a text');
  if (text.length > MAX_CHECKPOINT_BYTES || Buffer.byteLength(text) > MAX_CHECKPOINT_BYTES)
    throw malformed(`a checkpoint is at most ${MAX_CHECKPOINT_BYTES} bytes`);
  if (!text.endsWith('\n')) throw malformed('a checkpoint ends with a newline');
  if (hasBadChars(text)) throw malformed('a checkpoint holds a control character or is not UTF-8');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw malformed('a checkpoint has an origin, a size and a root hash line');
  if (lines.length > 3 + MAX_CHECKPOINT_EXTENSIONS) throw malformed(`a checkpoint has at most ${MAX_CHECKPOINT_EXTENSIONS} extension lines`);
  const [origin, sizeLine, rootLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin.length === 0) throw malformed("the checkpoint's origin is empty");
  if (!SIZE.test(sizeLine)) throw malformed('the checkpoint size is not a decimal number without leading zeros');
  const size = Number(sizeLine);
  if (!Number.isSafeInteger(size)) throw malformed('the checkpoint size is larger than 2^53-1');
  const rootHash = decodeBase64(rootLine);
  if (rootHash === undefined || rootHash.length !== HASH_SIZE) throw malformed(`the checkpoint root hash is not the base64 of ${HASH_SIZE} bytes`);
  for (const e of extensions) if (e.length === 0) throw malformed('a checkpoint extension line is empty');
  return { origin, size, rootHash, extensions };
}
