import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseDocument, parseReport } from './parse.ts';
import { openVexDocument, vexDocumentOf } from './vex-document.ts';

const TEXT = readFileSync(new URL('./testdata/openvex-0.2.0.json', import.meta.url), 'utf8');

const refusal = (doc: Record<string, unknown>): { code: string; field?: string | undefined } => {
  try {
    vexDocumentOf(doc, parseDocument(doc));
  } catch (err) {
    return { code: (err as { code: string }).code, field: (err as { field?: string }).field };
  }
  return { code: 'none' };
};

describe('OpenVEX documents', () => {
  it('reads the identity beside the statements: @id, author, version, timestamp', () => {
    const doc = JSON.parse(TEXT) as Record<string, unknown>;
    const d = vexDocumentOf(doc, parseDocument(doc));
    assert.equal(d.id, 'https://example.com/vex/2026-0001');
    assert.equal(d.author, 'Shop security team <security@example.com>');
    assert.equal(d.version, 1);
    assert.equal(d.timestamp, '2026-11-30T08:00:00.000Z');
    assert.ok(d.statements.length > 0);
  });

  it('refuses a document without @id or version, or with a NUL anywhere, naming the field', () => {
    const doc = JSON.parse(TEXT) as Record<string, unknown>;
    assert.deepEqual(refusal({ ...doc, '@id': undefined }), { code: 'ERR_VULN_REPORT_INVALID', field: '["@id"]' });
    assert.deepEqual(refusal({ ...doc, '@id': 'has space' }), { code: 'ERR_VULN_REPORT_INVALID', field: '["@id"]' });
    // Multi-byte characters count as their bytes (the stored @id is an index key).
    assert.deepEqual(refusal({ ...doc, '@id': `urn:${'é'.repeat(600)}` }), { code: 'ERR_VULN_REPORT_INVALID', field: '["@id"]' });
    assert.equal(vexDocumentOf({ ...doc, '@id': `urn:${'e'.repeat(1000)}` }, parseDocument(doc)).id.length, 1004);
    assert.deepEqual(refusal({ ...doc, version: undefined }), { code: 'ERR_VULN_REPORT_INVALID', field: 'version' });
    assert.deepEqual(refusal({ ...doc, version: 1.5 }), { code: 'ERR_VULN_REPORT_INVALID', field: 'version' });
    assert.equal(vexDocumentOf({ ...doc, version: '7' }, parseDocument(doc)).version, 7);
    const statements = structuredClone(doc.statements) as Array<Record<string, unknown>>;
    statements[0]!.impact_statement = 'a\u0000b';
    assert.deepEqual(refusal({ ...doc, statements }), { code: 'ERR_VULN_REPORT_INVALID', field: 'statements' });
  });

  it('writes a v0.2.0 document that reads back to the same statements', () => {
    const r = parseReport(TEXT);
    const out = openVexDocument({
      id: 'urn:writ:example.org:vex-export',
      author: 'spiffe://example.org',
      version: 3,
      timestamp: '2026-12-02T00:00:00.000Z',
      statements: r.vex,
    });
    assert.equal(out['@context'], 'https://openvex.dev/ns/v0.2.0');
    const back = parseReport(JSON.stringify(out));
    assert.equal(back.format, 'openvex');
    assert.equal(back.formatVersion, 'v0.2.0');
    assert.deepEqual(back.vex, r.vex);
    assert.deepEqual(vexDocumentOf(out, back).version, 3);
  });
});
