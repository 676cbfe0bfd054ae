/**
 * Base-image lineage kept on the inventory (issue 13): each image's parent as `@writ/vuln`'s
 * `Lineage` finds it, stored on the image row so answers read it instead of recomputing it over the
 * whole inventory. Recomputed when an image's layers, base annotations or index digest change, and
 * then for the images that may be its children (those whose layers start with its layers, or whose
 * base annotation names it).
 *
 * An image's layer prefixes are kept as chain IDs (`image_prefixes`): the parent by layers is the
 * longest prefix that is another image's whole layer list, found with one indexed lookup.
 */
import { createHash } from 'node:crypto';
import { BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, Lineage, type LineageImage, repositoryOf } from '@writ/vuln';
import type { Row, SqlExecutor, SqlValue } from './driver.ts';

/** What lineage reads of an image row. */
interface LineageFields {
  readonly digest: string;
  readonly indexDigest: string | null;
  readonly platform: string | null;
  readonly names: readonly string[];
  readonly tags: readonly string[];
  readonly layers: readonly string[];
  readonly annotations: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  readonly created: number | null;
}

export const LINEAGE_COLUMNS = 'digest, index_digest, platform, names, tags, layers, annotations, created';

export function toLineageImage(r: Row): LineageImage {
  const created = r['created'] === null || r['created'] === undefined ? undefined : new Date(Number(r['created'])).toISOString();
  const names = JSON.parse(r['names'] as string) as string[];
  const tags = JSON.parse(r['tags'] as string) as string[];
  return {
    digest: r['digest'] as string,
    indexDigest: (r['index_digest'] as string | null) ?? undefined,
    platform: (r['platform'] as string | null) ?? undefined,
    names: [...tags, ...names],
    diffIds: JSON.parse(r['layers'] as string) as string[],
    annotations: JSON.parse(r['annotations'] as string) as Record<string, string>,
    created,
  };
}

/** Chain IDs of every layer prefix, bottom layer first: element i names layers[0..i]. */
export function prefixChains(layers: readonly string[]): string[] {
  const out: string[] = [];
  let prev = '';
  for (const l of layers) {
    prev = createHash('sha256').update(`${prev}\n${l}`).digest('hex');
    out.push(prev);
  }
  return out;
}

const baseAnnotation = (i: LineageFields, key: string): string | null => (i.annotations[key] ?? i.labels?.[key])?.trim() || null;

/**
 * Called by `mergeImageTx` after every write of an image: keeps its repositories, layer prefixes and
 * parent, and its children's parents, in the same transaction.
 */
export async function indexImageTx(tx: SqlExecutor, old: LineageFields | undefined, now: LineageFields): Promise<void> {
  const repos = new Set([...now.names, ...now.tags].map(repositoryOf));
  const oldRepos = new Set(old === undefined ? [] : [...old.names, ...old.tags].map(repositoryOf));
  for (const repo of repos)
    if (!oldRepos.has(repo)) await tx.execute('INSERT INTO image_repos (repo, digest) VALUES (?, ?) ON CONFLICT (repo, digest) DO NOTHING', [repo, now.digest]);
  const baseRef = baseAnnotation(now, BASE_DIGEST_ANNOTATION);
  const changed =
    old === undefined ||
    JSON.stringify(old.layers) !== JSON.stringify(now.layers) ||
    old.indexDigest !== now.indexDigest ||
    old.platform !== now.platform ||
    baseAnnotation(old, BASE_DIGEST_ANNOTATION) !== baseRef ||
    baseAnnotation(old, BASE_NAME_ANNOTATION) !== baseAnnotation(now, BASE_NAME_ANNOTATION) ||
    (old.names.length === 0 && now.names.length > 0);
  if (!changed) return;
  const chains = prefixChains(now.layers);
  await tx.execute('DELETE FROM image_prefixes WHERE digest = ?', [now.digest]);
  for (let i = 0; i < chains.length; i += 200) {
    const chunk = chains.slice(i, i + 200);
    await tx.execute(
      `INSERT INTO image_prefixes (chain_id, digest, depth) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')} ON CONFLICT (chain_id, digest) DO NOTHING`,
      chunk.flatMap((c, j): SqlValue[] => [c, now.digest, i + j + 1]),
    );
  }
  await tx.execute('UPDATE images SET chain_id = ?, base_ref = ? WHERE digest = ?', [chains.at(-1) ?? null, baseRef, now.digest]);
  await relinkTx(tx, now.digest);
  // Its children: images built on its layers, and images whose base annotation names it (or its index).
  const full = chains.at(-1);
  const children = new Set<string>();
  if (full !== undefined)
    for (const r of await tx.query('SELECT digest FROM image_prefixes WHERE chain_id = ? AND digest <> ?', [full, now.digest]))
      children.add(r['digest'] as string);
  const refs = [now.digest, ...(now.indexDigest === null ? [] : [now.indexDigest])];
  for (const r of await tx.query(`SELECT digest FROM images WHERE base_ref IN (${refs.map(() => '?').join(', ')}) AND digest <> ?`, [...refs, now.digest]))
    children.add(r['digest'] as string);
  for (const child of children) await relinkTx(tx, child);
}

/** Recomputes one image's parent from the images that can be it, and stores it. */
async function relinkTx(tx: SqlExecutor, digest: string): Promise<void> {
  const row = (await tx.query(`SELECT ${LINEAGE_COLUMNS}, labels FROM images WHERE digest = ?`, [digest]))[0];
  if (row === undefined) return;
  const image = toLineageImage(row);
  const labels = JSON.parse(row['labels'] as string) as Record<string, string>;
  const annotations = { ...image.annotations };
  for (const key of [BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION])
    if (annotations[key] === undefined && labels[key] !== undefined) annotations[key] = labels[key];
  const self: LineageImage = { ...image, annotations };
  const candidates: LineageImage[] = [];
  // Prefixes shorter than the whole: an image with the same layers is a sibling, not a base.
  const chains = prefixChains(self.diffIds).slice(0, -1);
  for (let i = 0; i < chains.length; i += 200) {
    const chunk = chains.slice(i, i + 200);
    candidates.push(
      ...(await tx.query(`SELECT ${LINEAGE_COLUMNS} FROM images WHERE chain_id IN (${chunk.map(() => '?').join(', ')})`, chunk)).map(toLineageImage),
    );
  }
  const ref = annotations[BASE_DIGEST_ANNOTATION]?.trim();
  if (ref) candidates.push(...(await tx.query(`SELECT ${LINEAGE_COLUMNS} FROM images WHERE digest = ? OR index_digest = ?`, [ref, ref])).map(toLineageImage));
  const p = new Lineage([self, ...candidates.filter((c) => c.digest !== digest)]).parent(self);
  await tx.execute('UPDATE images SET parent_digest = ?, parent_name = ?, parent_source = ?, base_layers = ? WHERE digest = ?', [
    p?.digest ?? null,
    p?.name ?? null,
    p?.source ?? null,
    p?.baseLayers ?? null,
    digest,
  ]);
}
