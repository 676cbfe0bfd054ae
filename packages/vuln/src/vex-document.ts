/** An OpenVEX document as a unit: its identity (`@id`, version) and its statements; and the document Writ exports. */
import { vulnError } from './errors.ts';
import { type Obj, isObj, optStr, str } from './json.ts';
import { VEX_JUSTIFICATIONS } from './openvex.ts';
import type { Report, VexStatement } from './types.ts';

export interface VexDocument {
  /** The document's IRI (`@id`): a newer version of the same `@id` replaces the older one's statements. */
  readonly id: string;
  readonly author: string;
  readonly role?: string;
  /** Incremented by its author on every change (OpenVEX). */
  readonly version: number;
  /** ISO 8601 (milliseconds, UTC). */
  readonly timestamp?: string;
  readonly statements: readonly VexStatement[];
}

// Bytes: the stored @id is a primary key, and PostgreSQL's index entries hold at most ~2.7 kB.
const MAX_IRI = 1024;

/**
 * The document-level fields of an OpenVEX document beside its statements (`report`: what
 * parseDocument made of the same `doc`). `@id` and `version` are required (the spec's document
 * fields): they decide which statements a later document replaces.
 */
export function vexDocumentOf(doc: unknown, report: Report): VexDocument {
  if (!isObj(doc) || report.format !== 'openvex') throw vulnError('ERR_VULN_FORMAT_UNKNOWN', 'not an OpenVEX document');
  const d = doc as Obj;
  const id = d['@id'] === undefined ? undefined : str(d['@id'], '["@id"]');
  if (id === undefined || id === '') throw vulnError('ERR_VULN_REPORT_INVALID', 'an OpenVEX document needs an "@id" (the IRI naming it)', '["@id"]');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (new TextEncoder().encode(id).length > MAX_IRI || /[\s\u0000-\u001f\u007f]/.test(id))
    throw vulnError('ERR_VULN_REPORT_INVALID', `"@id" must be an IRI of at most ${MAX_IRI} bytes without spaces`, '["@id"]');
  const v = d.version;
  const version = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,15}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(version) || version < 0)
    throw vulnError('ERR_VULN_REPORT_INVALID', 'an OpenVEX document needs a "version" (a whole number its author increments on every change)', 'version');
  const role = optStr(d.role, 'role');
  // No identifier or statement holds U+0000, and PostgreSQL cannot store it in text.
  if (JSON.stringify([id, report.scanner.name, role ?? '', report.vex]).includes('\\u0000'))
    throw vulnError('ERR_VULN_REPORT_INVALID', 'the document contains a NUL character (U+0000)', 'statements');
  return {
    id,
    author: report.scanner.name,
    ...(role !== undefined ? { role } : {}),
    version,
    ...(report.scannedAt !== undefined ? { timestamp: report.scannedAt } : {}),
    statements: report.vex,
  };
}

/** A statement as OpenVEX v0.2.0 writes it. */
export function openVexStatement(s: VexStatement): Record<string, unknown> {
  const out: Record<string, unknown> = {
    vulnerability: { name: s.vulnerability, ...(s.aliases.length ? { aliases: s.aliases } : {}) },
    ...(s.timestamp !== undefined ? { timestamp: s.timestamp } : {}),
    products: s.products.map((p) => ({
      '@id': p.id,
      ...(p.purl !== undefined && p.purl !== p.id ? { identifiers: { purl: p.purl } } : {}),
      ...(p.digest !== undefined && p.digest !== p.id && p.digest.startsWith('sha256:') ? { hashes: { 'sha-256': p.digest.slice(7) } } : {}),
      ...(p.subcomponents.length
        ? {
            subcomponents: p.subcomponents.map((c) => ({ '@id': c.id, ...(c.purl !== undefined && c.purl !== c.id ? { identifiers: { purl: c.purl } } : {}) })),
          }
        : {}),
    })),
    status: s.status,
  };
  if (s.justification !== undefined && (VEX_JUSTIFICATIONS as readonly string[]).includes(s.justification)) out.justification = s.justification;
  if (s.impactStatement !== undefined) out.impact_statement = s.impactStatement;
  if (s.actionStatement !== undefined) out.action_statement = s.actionStatement;
  return out;
}

/** An OpenVEX v0.2.0 document of these statements. */
export function openVexDocument(d: { id: string; author: string; role?: string; version: number; timestamp: string; statements: readonly VexStatement[] }) {
  return {
    '@context': 'https://openvex.dev/ns/v0.2.0',
    '@id': d.id,
    author: d.author,
    ...(d.role !== undefined ? { role: d.role } : {}),
    timestamp: d.timestamp,
    version: d.version,
    tooling: 'writ',
    statements: d.statements.map(openVexStatement),
  };
}
