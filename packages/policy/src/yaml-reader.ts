/**
 * Reading Writ's YAML documents with line numbers: the limits checked before parsing, the
 * document walk and the field helpers every document kind uses (AccessPolicy here,
 * AdmissionPolicy/AdmissionException in @writ/admission). Problems are collected, not thrown one
 * by one, so a user sees all of them with their line:column at once.
 */
import { LineCounter, isMap, isScalar, isSeq, parseAllDocuments, type Node, type Pair, type YAMLMap } from 'yaml';
import { WritError } from '@writ/spiffe';

export const LIMITS = { bytes: 4 * 1024 * 1024, documents: 10_000, rulesPerPolicy: 20_000, listItems: 1000, depth: 64 } as const;

export interface PolicyIssue {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** Thrown with every problem found, each with its line; `toString()` lists them. */
export class PolicyError extends WritError {
  readonly issues: readonly PolicyIssue[];
  constructor(file: string, issues: readonly PolicyIssue[]) {
    super(
      'ERR_POLICY_INVALID',
      `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${issues
        .slice(0, 50)
        .map((i) => `  ${file}:${i.line}:${i.column}: ${i.message}`)
        .join('\n')}`,
    );
    this.issues = issues;
  }
}

/** Rejects nesting deeper than LIMITS.depth before the YAML parser sees it (flow collections recurse). */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"') i++;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#') while (i < text.length && text[i] !== '\n') i++;
    else if (c === '[' || c === '{') max = Math.max(max, ++depth);
    else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return max;
}

function fieldNames(node: YAMLMap): string[] {
  return node.items.map((p) => (isScalar(p.key) ? String(p.key.value) : ''));
}

/** One well-formed YAML document of the text (documents with syntax errors are reported, not listed). */
export interface YamlDocument {
  /** The top-level mapping's fields (only the allowed ones). */
  readonly fields: Map<string, Node>;
  /** `kind` as written ('' when absent). */
  readonly kind: string;
  readonly node: Node;
  readonly line: number;
  /** This document's own text (without the `---` separator), to store it as written. */
  readonly source: string;
  /** Plain JS of the document; aliases refused (a YAML bomb expands through them). */
  toJS(): unknown;
}

/** A YAML text read into documents, with helpers that record problems at their line:column. */
export class YamlReader {
  readonly file: string;
  readonly issues: PolicyIssue[] = [];
  readonly documents: YamlDocument[] = [];
  readonly #lc = new LineCounter();

  /**
   * Throws PolicyError at once for a text over the limits or that is not YAML at all. `topFields`:
   * the fields a document may have (null: any, for documents Writ does not define, like Pods).
   */
  constructor(text: string, file: string, topFields: readonly string[] | null, limits: { readonly bytes?: number } = {}) {
    this.file = file;
    if (typeof text !== 'string') throw new TypeError('policy text must be a string');
    const maxBytes = limits.bytes ?? LIMITS.bytes;
    if (text.length > maxBytes || Buffer.byteLength(text) > maxBytes)
      throw new PolicyError(file, [{ line: 1, column: 1, message: `larger than ${maxBytes} bytes` }]);
    if (nestingDepth(text) > LIMITS.depth) throw new PolicyError(file, [{ line: 1, column: 1, message: `nested deeper than ${LIMITS.depth} levels` }]);
    let docs;
    try {
      docs = parseAllDocuments(text, { lineCounter: this.#lc, prettyErrors: false, uniqueKeys: true, strict: true });
    } catch (err) {
      throw new PolicyError(file, [{ line: 1, column: 1, message: `not YAML: ${(err as Error).message.split('\n')[0]}` }]);
    }
    const docList = Array.isArray(docs) ? docs : [docs];
    if (docList.length > LIMITS.documents) throw new PolicyError(file, [{ line: 1, column: 1, message: `more than ${LIMITS.documents} documents` }]);
    for (const doc of docList) {
      // linePos is only filled in with prettyErrors (which also rewrites the message): the offset is always there.
      for (const e of doc.errors) {
        const at = this.#lc.linePos(e.pos[0]);
        this.issues.push({ line: at.line, column: at.col, message: e.message.split('\n')[0]! });
      }
      // An empty document (a trailing `---`) holds nothing to check.
      if (doc.errors.length || doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) continue;
      const node = doc.contents as Node;
      const fields = topFields ? this.fields(node, 'the document', topFields) : isMap(node) ? this.fields(node, 'the document', fieldNames(node)) : undefined;
      if (!fields) {
        if (!topFields) this.issue(node, 'the document must be a mapping');
        continue;
      }
      const k = fields.get('kind');
      const source = text
        .slice(doc.range[0], doc.range[2])
        .replace(/^---[^\n]*\n/, '')
        .replace(/\n\.\.\.[ \t]*\n?$/, '\n');
      this.documents.push({
        fields,
        kind: isScalar(k) ? String(k.value) : '',
        node,
        line: this.pos(node).line,
        source: `${source.replace(/^\s*\n/, '').trimEnd()}\n`,
        toJS: () => doc.toJS({ maxAliasCount: 0 }),
      });
    }
  }

  pos(n: Node | Pair | null | undefined): { line: number; column: number } {
    const off = (n && 'range' in n && n.range ? n.range[0] : n && 'key' in n && (n.key as Node)?.range ? (n.key as Node).range![0] : 0) ?? 0;
    const p = this.#lc.linePos(off);
    return { line: p.line, column: p.col };
  }

  issue(n: Node | Pair | null | undefined, message: string): void {
    this.issues.push({ ...this.pos(n), message });
  }

  /** A mapping's fields; unknown ones and missing required ones are problems. */
  fields(node: unknown, where: string, allowed: readonly string[], required: readonly string[] = []): Map<string, Node> | undefined {
    if (!isMap(node)) return void this.issue(node as Node, `${where} must be a mapping`);
    const out = new Map<string, Node>();
    for (const pair of (node as YAMLMap).items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '';
      if (!allowed.includes(key)) this.issue(pair as Pair, `unknown field "${key.slice(0, 60)}" in ${where}; allowed: ${allowed.join(', ')}`);
      else out.set(key, pair.value as Node);
    }
    for (const r of required) if (!out.has(r)) this.issue(node as Node, `${where} needs "${r}"`);
    return out;
  }

  str(n: Node | undefined, where: string): string | undefined {
    if (!isScalar(n) || typeof n.value !== 'string' || n.value === '') return void this.issue(n, `${where} must be a non-empty string`);
    return n.value;
  }

  /** A non-empty list (a single string counts as a list of one). */
  list(n: Node | undefined, where: string): Node[] | undefined {
    if (isScalar(n) && typeof n.value === 'string') return [n];
    if (!isSeq(n) || n.items.length === 0) return void this.issue(n, `${where} must be a non-empty list`);
    if (n.items.length > LIMITS.listItems) return void this.issue(n, `${where} has more than ${LIMITS.listItems} items`);
    return n.items as Node[];
  }

  /** A non-empty list of non-empty strings, each checked by `check` (which returns a problem or undefined). */
  strings(n: Node | undefined, where: string, check?: (s: string) => string | undefined): string[] {
    const out: string[] = [];
    for (const [i, item] of (this.list(n, where) ?? []).entries()) {
      const s = this.str(item, `${where}[${i}]`);
      if (s === undefined) continue;
      const bad = check?.(s);
      if (bad) this.issue(item, `${where}[${i}]: ${bad}`);
      else out.push(s);
    }
    return out;
  }

  bool(n: Node | undefined, where: string): boolean | undefined {
    if (!isScalar(n) || typeof n.value !== 'boolean') return void this.issue(n, `${where} must be true or false`);
    return n.value;
  }

  /** An RFC 3339 time as epoch ms (YAML's timestamps and quoted strings alike). */
  time(n: Node | undefined, where: string): number | undefined {
    const v = isScalar(n) ? n.value : undefined;
    const t = v instanceof Date ? v.getTime() : typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
    if (!Number.isFinite(t)) return void this.issue(n, `${where} must be an RFC 3339 time like 2026-12-31T00:00:00Z`);
    return t;
  }

  /** `metadata.name` in Kubernetes name form, unique among `seen` (name -> line). */
  name(meta: Map<string, Node> | undefined, what: string, seen: Map<string, number>, line: number): string | undefined {
    const n = meta?.get('name');
    const name = n ? this.str(n, 'metadata.name') : undefined;
    if (name === undefined) return undefined;
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name)) {
      this.issue(n, 'metadata.name must be lowercase a-z 0-9 . - (like a Kubernetes name)');
      return undefined;
    }
    if (seen.has(name)) this.issue(n, `${what} "${name}" is defined twice (also line ${seen.get(name)})`);
    seen.set(name, line);
    return name;
  }

  /** Throws every recorded problem, sorted by position. */
  finish(): void {
    if (this.issues.length)
      throw new PolicyError(
        this.file,
        this.issues.sort((a, b) => a.line - b.line || a.column - b.column),
      );
  }
}
