/** Images entering the inventory from admission and `writ image add` (issue 13): SQL shared by SQLite and PostgreSQL. */
import { checkImageDigest } from '@writ/protocol';
import type { SqlDriver } from './driver.ts';
import { IMAGE_COLUMNS, mergeImageTx, toInventoryImage } from './inventory-sql.ts';
import type { InventoryImage } from './types.ts';

/** Everything but the times: what makes a merge news to anyone listening. */
const content = (i: InventoryImage): string =>
  JSON.stringify([i.configDigest, i.indexDigest, i.platform, i.names, i.tags, i.layers, i.annotations, i.labels, i.created]);

/**
 * Merges each image into the inventory (through `mergeImageTx`, as every source does), in one
 * transaction. `added`: images new to the inventory; `changed`: known ones that gained something
 * (a name, a tag, layers, annotations...). Seeing an image again only moves its last-seen time.
 */
export async function recordImages(db: SqlDriver, images: readonly InventoryImage[], now: number): Promise<{ added: number; changed: number }> {
  for (const [i, img] of images.entries()) checkImageDigest(img.digest, `images[${i}].digest`);
  let added = 0;
  let changed = 0;
  if (images.length === 0) return { added, changed };
  await db.transaction(async (tx) => {
    added = 0;
    changed = 0;
    for (const img of images) {
      const before = (await tx.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE digest = ?`, [img.digest]))[0];
      await mergeImageTx(tx, { ...img, firstSeen: now, lastSeen: now });
      if (before === undefined) {
        added++;
        continue;
      }
      const after = (await tx.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE digest = ?`, [img.digest]))[0]!;
      if (content(toInventoryImage(before)) !== content(toInventoryImage(after))) changed++;
    }
  });
  return { added, changed };
}
