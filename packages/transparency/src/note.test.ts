import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  MAX_CHECKPOINT_BYTES,
  MAX_NOTE_BYTES,
  formatCheckpoint,
  generateNoteKey,
  leafHash,
  noteSigner,
  noteVerifier,
  openNote,
  parseCheckpoint,
  rootOf,
  signNote,
} from './index.ts';
import { RFC6962_LEAVES, RFC6962_ROOTS } from './testing.ts';
import { hasBadChars } from './text.ts';

const ORIGIN = 'writ.test/audit';
const root = rootOf(RFC6962_LEAVES.map(leafHash));

describe('checkpoints (C2SP tlog-checkpoint)', () => {
  it('formats origin, size and base64 root on lines of their own, and parses back', () => {
    const text = formatCheckpoint({ origin: ORIGIN, size: 8, rootHash: root, extensions: [] });
    assert.equal(text, `${ORIGIN}\n8\n${Buffer.from(RFC6962_ROOTS[7] as string, 'hex').toString('base64')}\n`);
    const c = parseCheckpoint(text);
    assert.equal(c.origin, ORIGIN);
    assert.equal(c.size, 8);
    assert.deepEqual(c.rootHash, root);
    assert.deepEqual(c.extensions, []);
    const ext = formatCheckpoint({ origin: ORIGIN, size: 0, rootHash: root, extensions: ['t 1700000000'] });
    assert.deepEqual(parseCheckpoint(ext).extensions, ['t 1700000000']);
    assert.equal(parseCheckpoint(formatCheckpoint({ ...c, size: Number.MAX_SAFE_INTEGER })).size, Number.MAX_SAFE_INTEGER);
  });

  it('round-trips any valid checkpoint (property)', () => {
    const line = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !hasBadChars(s));
    fc.assert(
      fc.property(
        line,
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.array(line, { maxLength: 4 }),
        (origin, size, rootHash, extensions) => {
          const c = parseCheckpoint(formatCheckpoint({ origin, size, rootHash, extensions }));
          assert.deepEqual({ ...c, rootHash: [...c.rootHash] }, { origin, size, rootHash: [...rootHash], extensions });
        },
      ),
    );
  });

  it('refuses every malformed text with ERR_AUDIT_CHECKPOINT_MALFORMED', () => {
    const b64 = Buffer.from(root).toString('base64');
    const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const stray = `${b64.slice(0, -2)}${ALPHA[ALPHA.indexOf(b64.at(-2) as string) | 1]}=`;
    const bad = [
      '',
      `${ORIGIN}\n8\n${b64}`, // no final newline
      `${ORIGIN}\n8\n`, // no root
      `\n8\n${b64}\n`, // empty origin
      `${ORIGIN}\n08\n${b64}\n`, // leading zero
      `${ORIGIN}\n-1\n${b64}\n`,
      `${ORIGIN}\n+8\n${b64}\n`,
      `${ORIGIN}\n 8\n${b64}\n`,
      `${ORIGIN}\n8.0\n${b64}\n`,
      `${ORIGIN}\n9007199254740992\n${b64}\n`, // 2^53
      `${ORIGIN}\n18446744073709551616\n${b64}\n`,
      `${ORIGIN}\n8\n${b64.slice(0, -1)}\n`, // unpadded
      `${ORIGIN}\n8\n${Buffer.from(root).toString('base64url')}=\n`, // URL alphabet
      `${ORIGIN}\n8\n${stray}\n`, // stray bits
      `${ORIGIN}\n8\nAAAA\n`, // 3 bytes
      `${ORIGIN}\n8\n${b64}\n\n`, // empty extension line
      `${ORIGIN}\r\n8\n${b64}\n`, // CR
      `${ORIGIN}\n8\n${b64}\nx\u0000y\n`,
      `\ud800${ORIGIN}\n8\n${b64}\n`, // lone surrogate
      `${ORIGIN}\n8\n${b64}\n${'e\n'.repeat(40)}`, // too many extensions
      `${'a'.repeat(MAX_CHECKPOINT_BYTES)}\n8\n${b64}\n`, // too large
    ];
    for (const t of bad) assert.throws(() => parseCheckpoint(t), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' }, JSON.stringify(t.slice(0, 80)));
    assert.throws(() => parseCheckpoint(42 as unknown as string), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' });
    assert.throws(() => formatCheckpoint({ origin: 'a\nb', size: 1, rootHash: root, extensions: [] }), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' });
    assert.throws(() => formatCheckpoint({ origin: ORIGIN, size: 1.5, rootHash: root, extensions: [] }), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' });
    assert.throws(() => formatCheckpoint({ origin: ORIGIN, size: 1, rootHash: root.subarray(1), extensions: [] }), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' });
    assert.throws(() => formatCheckpoint({ origin: ORIGIN, size: 1, rootHash: root, extensions: [''] }), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED' });
  });

  it('refuses a huge text by its size before splitting it', () => {
    const huge = `${ORIGIN}\n8\n${'\n'.repeat(20 * 1024 * 1024)}`;
    assert.throws(() => parseCheckpoint(huge), { code: 'ERR_AUDIT_CHECKPOINT_MALFORMED', message: /at most 16384 bytes/ });
    assert.throws(() => openNote(huge, []), { code: 'ERR_AUDIT_SIGNATURE_INVALID', message: /at most 65536 bytes/ });
    // Multi-byte characters count as bytes, not as characters.
    const wide = `${'\u00e9'.repeat(MAX_CHECKPOINT_BYTES / 2 + 1)}\n8\nAAAA\n`;
    assert.throws(() => parseCheckpoint(wide), { message: /at most/ });
  });

  it('never throws anything but its own code on arbitrary text (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        try {
          parseCheckpoint(s);
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_AUDIT_CHECKPOINT_MALFORMED');
        }
      }),
    );
  });
});

describe('signed notes (C2SP signed-note, golang.org/x/mod/sumdb/note keys)', () => {
  const { skey, vkey } = generateNoteKey(ORIGIN);
  const signer = noteSigner(skey);
  const verifier = noteVerifier(vkey);
  const text = formatCheckpoint({ origin: ORIGIN, size: 8, rootHash: root, extensions: [] });

  it('keys have the note formats, and a signed checkpoint opens with its verifier', () => {
    assert.match(skey, /^PRIVATE\+KEY\+writ\.test\/audit\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    assert.match(vkey, /^writ\.test\/audit\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    assert.equal(skey.split('+')[3], vkey.split('+')[1]);
    assert.equal(signer.name, ORIGIN);
    assert.equal(signer.keyHash, verifier.keyHash);
    const note = signNote(text, signer);
    assert.match(note, /^writ\.test\/audit\n8\n[^\n]+\n\n\u2014 writ\.test\/audit [A-Za-z0-9+/]{91}=\n$/);
    assert.deepEqual(openNote(note, [verifier]), { text, verifiedBy: [ORIGIN] });
  });

  it('opens the example of the C2SP signed-note spec with its published key (golang.org/x/mod/sumdb/note)', () => {
    // The PeterNeumann example of golang.org/x/mod/sumdb/note's documentation (data only).
    const v = noteVerifier('PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW');
    const note =
      "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    assert.deepEqual(openNote(note, [v]).verifiedBy, ['PeterNeumann']);
    // Ed25519 is deterministic: signing with the documented signer key gives the documented note.
    const s = noteSigner('PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz');
    assert.equal(s.keyHash, 0xc74f20a3);
    assert.equal(signNote(note.slice(0, note.indexOf('\n\n') + 1), s), note);
    assert.throws(() => openNote(note.replace('answer', 'Answer'), [v]), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
  });

  it('ignores unknown keys and repeated signatures, and refuses a note with no known signature', () => {
    const other = generateNoteKey('witness.example/w1');
    const both = signNote(text, noteSigner(other.skey), signer);
    assert.deepEqual(openNote(both, [verifier]).verifiedBy, [ORIGIN]);
    assert.deepEqual(openNote(both, [verifier, noteVerifier(other.vkey)]).verifiedBy, ['witness.example/w1', ORIGIN]);
    const sigLine = signNote(text, signer).slice(text.length + 1);
    assert.deepEqual(openNote(`${text}\n${sigLine}${sigLine}`, [verifier]).verifiedBy, [ORIGIN]);
    assert.throws(() => openNote(signNote(text, noteSigner(other.skey)), [verifier]), {
      code: 'ERR_AUDIT_SIGNATURE_INVALID',
      message: /no signature of a known key/,
    });
    // Same name, another key: its key hash differs, so it is unknown, not a failure.
    const impostor = generateNoteKey(ORIGIN);
    assert.throws(() => openNote(signNote(text, noteSigner(impostor.skey)), [verifier]), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
  });

  it('refuses altered notes and malformed signature blocks', () => {
    const note = signNote(text, signer);
    const sig = note.slice(note.lastIndexOf(' ') + 1, -1);
    const bad = [
      note.replace('\n8\n', '\n9\n'), // another size
      note.replace(`${ORIGIN}\n`, 'writ.test/other\n'),
      note.replace(sig, `${sig.slice(0, 10)}${sig[10] === 'A' ? 'B' : 'A'}${sig.slice(11)}`), // flipped signature
      note.slice(0, -1), // no final newline
      note.replace('\u2014', '-'), // ASCII dash
      note.replace('\u2014 ', '\u2014'),
      note.replace(` ${sig}`, ''), // no signature
      note.replace(sig, 'AAAA'), // too short
      note.replace(sig, `${sig}!`), // bad base64
      note.replace(sig, sig.slice(0, -1)), // unpadded
      note.replace('\n\n', '\n'), // no blank line
      `${text}\n`, // no signatures
      `${note}\u2014 ${ORIGIN}\n`,
      note.replace(ORIGIN, `${ORIGIN}\r`),
      `${note.slice(0, -1)}\u0000\n`,
      `${'x'.repeat(MAX_NOTE_BYTES)}\n\n${note.slice(text.length + 1)}`, // too large
      `${text}\n${'\u2014 a AAAAAAAA\n'.repeat(101)}`, // too many signatures
    ];
    for (const n of bad) assert.throws(() => openNote(n, [verifier]), { code: 'ERR_AUDIT_SIGNATURE_INVALID' }, JSON.stringify(n.slice(0, 120)));
    assert.throws(() => openNote(note, []), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
  });

  it('refuses malformed keys with ERR_AUDIT_KEY_INVALID and never shows the key in the message', () => {
    // The base64 key may hold a '+': split at the first ones only.
    const parts = (k: string) => {
      const a = k.indexOf('+');
      const b = k.indexOf('+', a + 1);
      return [k.slice(0, a), k.slice(a + 1, b), k.slice(b + 1)] as const;
    };
    const [name, hash, key] = parts(skey.slice('PRIVATE+KEY+'.length));
    const badSigners = [
      '',
      vkey,
      `PRIVATE+KEY+${name}+${hash}`,
      `PRIVATE+KEY+${name}+${hash}+${key}+x`,
      `PRIVATE+KEY+${name}+${((Number.parseInt(hash, 16) ^ 1) >>> 0).toString(16).padStart(8, '0')}+${key}`, // wrong hash
      `PRIVATE+KEY+${name}+${hash.slice(1)}+${key}`,
      `PRIVATE+KEY+${name}+${hash}+${key.slice(0, -2)}`,
      `PRIVATE+KEY+${name}+${hash}+${Buffer.concat([Buffer.from([2]), Buffer.from(key, 'base64').subarray(1)]).toString('base64')}`, // another algorithm byte
      `PRIVATE+KEY+bad name+${hash}+${key}`,
      `PRIVATE+KEY++${hash}+${key}`,
      `private+key+${name}+${hash}+${key}`,
    ];
    for (const s of badSigners) {
      assert.throws(
        () => noteSigner(s),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_AUDIT_KEY_INVALID', s);
          assert.ok(!err.message.includes(key), 'the key is not in the message');
          return true;
        },
      );
    }
    const [, vhash, vk] = parts(vkey);
    for (const v of ['', skey, `${name}+${vhash}`, `${name}+00000000+${vk}`, `${name}+${vhash}+${vk}=`, `${name} x+${vhash}+${vk}`, `+${vhash}+${vk}`])
      assert.throws(() => noteVerifier(v), { code: 'ERR_AUDIT_KEY_INVALID' }, v);
    for (const n of ['', 'a b', 'a+b', 'a\u00a0b', 'a\u2028b', 'a\nb'])
      assert.throws(() => generateNoteKey(n), { code: 'ERR_AUDIT_KEY_INVALID' }, JSON.stringify(n));
  });

  it('signNote refuses a text that is not a note text', () => {
    assert.throws(() => signNote('no newline', signer), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
    assert.throws(() => signNote('a\u0001\n', signer), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
    assert.throws(() => signNote(text), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
  });

  it('openNote answers its own code on arbitrary input, and opens only what was signed (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        try {
          const r = openNote(s, [verifier]);
          assert.fail(`opened ${JSON.stringify(r.text)}`);
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_AUDIT_SIGNATURE_INVALID');
        }
      }),
    );
    const note = signNote(text, signer);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: note.length - 1 }), fc.string({ minLength: 1, maxLength: 3 }), (at, ins) => {
        const altered = note.slice(0, at) + ins + note.slice(at);
        try {
          const r = openNote(altered, [verifier]);
          // Only an insertion in the signature block that leaves a valid signature line can open: the text is the signed one.
          assert.equal(r.text, text);
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_AUDIT_SIGNATURE_INVALID');
        }
      }),
    );
  });
});
