/** The admitted image digests agents check `requireAdmittedImage` entries against (read-only: the webhook writes them). */
import { checkImageDigest } from '@writ/protocol';
import { WritError } from '@writ/spiffe';
import { MAX_PAGE_SIZE } from '../store/types.ts';
import type { AdmittedImage } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { integerParam, ok, stringParam, type AddRoute } from './http.ts';

const imageJson = (i: AdmittedImage) => ({
  digest: i.digest,
  firstSeen: new Date(i.firstSeen).toISOString(),
  lastSeen: new Date(i.lastSeen).toISOString(),
});

export function admittedImagesRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'GET',
    '/v1/admission/images',
    'viewer',
    'Image digests admitted under an enforce admission policy, in the order they were first admitted (?pageSize=&pageToken=, or ?digest= for one): what agents check entries with `requireAdmittedImage` against. `requireAdmittedImage` in the answer says whether this server requires it of every entry.',
    async (req) => {
      const q = req.query;
      const digest = q.get('digest');
      if (digest !== null) {
        const one = await ctx.store.getAdmittedImage(checkImageDigest(digest, 'digest'));
        return ok({ images: one ? [imageJson(one)] : [], requireAdmittedImage: ctx.requireAdmittedImage === true });
      }
      const token = q.get('pageToken');
      if (token !== null && !/^\d{1,15}$/.test(token))
        throw new WritError('ERR_PAGE_TOKEN_INVALID', 'pageToken is not one this server issued', { field: 'pageToken' });
      const pageSize = Number(q.get('pageSize') ?? 100);
      const page = await ctx.store.listAdmittedImages({ afterSeq: token === null ? 0 : Number(token), limit: pageSize + 1 });
      const items = page.items.slice(0, pageSize);
      return ok({
        images: items.map(imageJson),
        requireAdmittedImage: ctx.requireAdmittedImage === true,
        ...(page.items.length > pageSize ? { nextPageToken: String(items.at(-1)!.seq) } : {}),
      });
    },
    undefined,
    { digest: stringParam(200), pageSize: integerParam(1, MAX_PAGE_SIZE), pageToken: stringParam(20) },
  );
}
