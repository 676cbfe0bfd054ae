/** `writ image add REF [--platform os/arch]`: the server reads an image from its registry into the inventory. */
import { isWritError } from '@writ/spiffe';
import { type Command, CommanderError } from 'commander';
import { ApiError, type ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

interface AddedImage {
  digest: string;
  configDigest: string | null;
  indexDigest: string | null;
  platform: string | null;
  names: string[];
  tags: string[];
  layers: string[];
  annotations: Record<string, string>;
  labels: Record<string, string>;
  created: string | null;
}

interface AddAnswer {
  reference: string;
  images: AddedImage[];
  added: number;
  changed: number;
}

export function registerImageAdd(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image').description('container images: digests and cosign signatures');
  image
    .command('add')
    .description(
      "add an image to the inventory: the server reads its manifest and config from the registry (with its --registry-config): digest, config digest, layers' diff IDs, labels, created, OCI annotations (base image among them); an index adds every platform, or the one asked for",
    )
    .argument('<ref>', 'image reference, e.g. registry.example.com/shop/web:1.4 or ...@sha256:...')
    .option('--platform <os/arch>', 'of an index, only this platform, e.g. linux/amd64 or linux/arm64/v8')
    .addHelpText('after', '\nExit codes: 0 added (or already known), 1 refused (unknown image, registry unreachable or refusing the credentials), 2 usage.')
    .action(async (ref: string, f: { platform?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      let r: AddAnswer;
      try {
        r = await api.call<AddAnswer>(
          'POST',
          '/v1/images',
          { reference: ref, ...(f.platform === undefined ? {} : { platform: f.platform }) },
          { timeoutMs: 60_000 },
        );
      } catch (err) {
        if (!isWritError(err)) throw err;
        const code = err instanceof ApiError ? err.serverCode : err.code;
        process.stderr.write(`writ: ${err.message}${err.field ? ` (at ${err.field})` : ''} [${code}]\n`);
        throw new CommanderError(1, 'writ.failed', err.message);
      }
      print(format, r, () => ({
        head: ['DIGEST', 'PLATFORM', 'LAYERS', 'BASE', 'INDEX'],
        body: r.images.map((i) => [
          i.digest,
          i.platform ?? '-',
          String(i.layers.length),
          i.annotations['org.opencontainers.image.base.name'] ?? '-',
          i.indexDigest ?? '-',
        ]),
      }));
    });
}
