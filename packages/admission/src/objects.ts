/**
 * The Kubernetes objects of a manifest file, for `writ admission check`: YAML or JSON, one or many
 * documents, `kind: List` (and `PodList`, `DeploymentList`, ...) expanded. Size and nesting are
 * checked before parsing and aliases are refused (a YAML bomb expands through them).
 */
import { WritError } from '@writ/spiffe';
import { PolicyError, YamlReader } from '@writ/policy';
import { POD_SPEC_KINDS } from './workload.ts';

/** Manifests are bigger than policies: rendered charts of a whole application. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
const MAX_OBJECTS = 10_000;

export interface ManifestObject {
  readonly kind: string;
  readonly name: string;
  /** As written; '' when the document has none (the caller picks the default namespace). */
  readonly namespace: string;
  readonly object: Record<string, unknown>;
  /** The line of its document. */
  readonly line: number;
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * Reads the objects of a manifest; throws ERR_ADMISSION_OBJECT_INVALID with every problem and its
 * line. Objects of kinds without a pod spec are refused unless `ignoreOtherKinds`, when they are left out.
 */
export function readObjects(text: string, opts: { file?: string; ignoreOtherKinds?: boolean } = {}): ManifestObject[] {
  const file = opts.file ?? 'input';
  const problems: string[] = [];
  const out: ManifestObject[] = [];
  try {
    const y = new YamlReader(text, file, null, { bytes: MAX_MANIFEST_BYTES });
    const visit = (value: unknown, line: number, where: string): void => {
      const o = obj(value);
      const kind = typeof o?.['kind'] === 'string' ? (o['kind'] as string) : '';
      if (!o || !kind) return void problems.push(`${file}:${line}: ${where} is not a Kubernetes object (no "kind")`);
      if (kind.endsWith('List') && Array.isArray(o['items'])) {
        for (const [i, item] of (o['items'] as unknown[]).entries()) visit(item, line, `${kind}.items[${i}]`);
        return;
      }
      const meta = obj(o['metadata']);
      const name = typeof meta?.['name'] === 'string' ? meta['name'] : typeof meta?.['generateName'] === 'string' ? meta['generateName'] : '';
      if (!POD_SPEC_KINDS.includes(kind)) {
        if (!opts.ignoreOtherKinds)
          problems.push(
            `${file}:${line}: kind ${JSON.stringify(kind.slice(0, 60))}${name ? ` (${name.slice(0, 100)})` : ''} has no pod to check; expected one of ${POD_SPEC_KINDS.join(', ')} (or --ignore-other-kinds)`,
          );
        return;
      }
      if (out.length >= MAX_OBJECTS) return void problems.push(`${file}: more than ${MAX_OBJECTS} objects`);
      out.push({ kind, name, namespace: typeof meta?.['namespace'] === 'string' ? meta['namespace'] : '', object: o, line });
    };
    for (const doc of y.documents) {
      let value: unknown;
      try {
        value = doc.toJS();
      } catch (err) {
        problems.push(`${file}:${doc.line}: cannot read this document: ${(err as Error).message.split('\n')[0]!.slice(0, 200)} (aliases are not allowed)`);
        continue;
      }
      visit(value, doc.line, 'the document');
    }
    y.finish();
  } catch (err) {
    if (!(err instanceof PolicyError)) throw err;
    problems.unshift(...err.issues.map((i) => `${file}:${i.line}:${i.column}: ${i.message}`));
  }
  if (problems.length)
    throw new WritError(
      'ERR_ADMISSION_OBJECT_INVALID',
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems
        .slice(0, 50)
        .map((p) => `  ${p}`)
        .join('\n')}`,
    );
  if (out.length === 0) throw new WritError('ERR_ADMISSION_OBJECT_INVALID', `${file}: no Pod or workload documents to check`);
  return out;
}
