/**
 * Many distinct signed images for the first-seen benchmark, pushed straight to the test registry:
 * an OCI image per digest (one shared layer, a config of its own) and its cosign signature in the
 * simple-signing layout cosign writes (`sha256-<hex>.sig` tag, payload layer with the signature
 * annotation). Signing thousands of images with the cosign CLI takes a process per image; this is
 * the same format made in-process (the image of the cached case is signed by the real cosign).
 */
import { createHash, sign, type KeyObject } from 'node:crypto';

interface Pusher {
  pushBlob(repository: string, bytes: Uint8Array): Promise<string>;
  pushManifest(repository: string, reference: string | undefined, bytes: Uint8Array, mediaType: string): Promise<{ digest: string }>;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';

const digestOf = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const manifest = (config: Buffer, layers: Array<{ mediaType: string; bytes: Buffer; annotations?: Record<string, string> }>): Buffer =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, size: config.length, digest: digestOf(config) },
      layers: layers.map((l) => ({
        mediaType: l.mediaType,
        size: l.bytes.length,
        digest: digestOf(l.bytes),
        ...(l.annotations ? { annotations: l.annotations } : {}),
      })),
    }),
  );

/** Pushes `count` images to `host/repository`, each signed by `key`; returns their digests, in order. */
export async function pushSignedImages(reg: Pusher, host: string, repository: string, key: KeyObject, count: number, parallel = 16): Promise<string[]> {
  const layer = Buffer.from(`writ bench layer ${repository}`);
  await reg.pushBlob(repository, layer);
  const out: string[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const config = Buffer.from(
        JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: [`BENCH_IMAGE=${i}`] }, rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }),
      );
      await reg.pushBlob(repository, config);
      const m = manifest(config, [{ mediaType: LAYER, bytes: layer }]);
      const { digest } = await reg.pushManifest(repository, `bench-${i}`, m, OCI_MANIFEST);
      out[i] = digest;
      const payload = Buffer.from(
        JSON.stringify({
          critical: {
            identity: { 'docker-reference': `${host}/${repository}` },
            image: { 'docker-manifest-digest': digest },
            type: 'cosign container image signature',
          },
          optional: null,
        }),
      );
      const sigConfig = Buffer.from(
        JSON.stringify({
          architecture: '',
          created: '0001-01-01T00:00:00Z',
          history: [{ created: '0001-01-01T00:00:00Z' }],
          os: '',
          rootfs: { type: 'layers', diff_ids: [digestOf(payload)] },
          config: {},
        }),
      );
      await reg.pushBlob(repository, payload);
      await reg.pushBlob(repository, sigConfig);
      const signature = sign('sha256', payload, key).toString('base64');
      const sigManifest = manifest(sigConfig, [
        { mediaType: SIMPLE_SIGNING, bytes: payload, annotations: { 'dev.cosignproject.cosign/signature': signature } },
      ]);
      await reg.pushManifest(repository, `${digest.replace(':', '-')}.sig`, sigManifest, OCI_MANIFEST);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}
