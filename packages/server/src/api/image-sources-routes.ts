/** `POST /v1/images` (`writ image add REF`): an image read from its registry into the inventory. */
import { WritError, isWritError } from '@writ/spiffe';
import { type Platform, type RegistryReader, parsePlatform } from '@writ/oci';
import { addImage } from '../image-sources.ts';
import type { InventoryImage } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { isoOrNull, object, ok, str, type AddRoute } from './http.ts';

const imageJson = (i: InventoryImage) => ({
  digest: i.digest,
  configDigest: i.configDigest,
  indexDigest: i.indexDigest,
  platform: i.platform,
  names: i.names,
  tags: i.tags,
  layers: i.layers,
  annotations: i.annotations,
  labels: i.labels,
  created: isoOrNull(i.created),
});

export function imageSourceRoutes(ctx: ApiContext & { readonly registry: RegistryReader }, add: AddRoute): void {
  add(
    'POST',
    '/v1/images',
    'operator',
    "Adds an image to the inventory from its registry (the server's --registry-config): {reference, platform?}. An index gives every platform's manifest, or only `platform` (os/architecture[/variant]). Each manifest is recorded with its config digest, index digest, platform, layer diff IDs, labels, created and OCI annotations; 201 when an image is new to the inventory, else 200. Registry failures are 404 ERR_IMAGE_NOT_FOUND, 502 ERR_REGISTRY_* or 504 ERR_REGISTRY_TIMEOUT.",
    async (req) => {
      const body = object(req.body);
      const reference = str(body, 'reference', { required: true, max: 1000 })!;
      if (reference === '') throw new WritError('ERR_FIELD_MISSING', 'field "reference" is required', { field: 'reference' });
      const p = str(body, 'platform', { max: 100 });
      let platform: Platform | undefined;
      try {
        platform = p === undefined ? undefined : parsePlatform(p);
      } catch (err) {
        throw new WritError('ERR_FIELD_INVALID', (err as Error).message, { field: 'platform' });
      }
      let r: Awaited<ReturnType<typeof addImage>>;
      try {
        r = await addImage(ctx, reference, platform, ctx.clock());
      } catch (err) {
        if (isWritError(err, 'ERR_IMAGE_REF_INVALID') && err.field === undefined) throw new WritError(err.code, err.message, { field: 'reference' });
        throw err;
      }
      return ok({ reference, images: r.images.map(imageJson), added: r.added, changed: r.changed }, r.added > 0 ? 201 : 200);
    },
    { limit: 16 * 1024, fields: ['reference', 'platform'] },
  );
}
