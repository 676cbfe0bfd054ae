/** `writ admission images`: the image digests admitted under an enforce policy, which agents check `requireAdmittedImage` entries against. */
import { type Command, CommanderError } from 'commander';
import type { ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

interface ImagesPage {
  images: Array<{ digest: string; firstSeen: string; lastSeen: string }>;
  requireAdmittedImage: boolean;
  nextPageToken?: string;
}

/** Adds `images` under `writ admission` (made here when no other command made it yet). */
export function addAdmittedImagesCommand(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const admission =
    program.commands.find((c) => c.name() === 'admission') ??
    program.command('admission').description('admission: Pod Security, image trust and their verdicts');
  admission
    .command('images')
    .description('image digests admitted under an enforce policy: what entries with --require-admitted-image need (follows every page)')
    .option('--digest <digest>', 'only this digest (sha256:...): was it admitted, and when (exit 3 and "not admitted" when it never was)')
    .action(async (f: { digest?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const all: ImagesPage['images'] = [];
      let requireAll = false;
      let pageToken: string | undefined;
      do {
        const q = new URLSearchParams(f.digest ? { digest: f.digest } : { pageSize: '1000', ...(pageToken ? { pageToken } : {}) });
        const page = await api.call<ImagesPage>('GET', `/v1/admission/images?${q}`);
        all.push(...page.images);
        requireAll = page.requireAdmittedImage;
        pageToken = page.nextPageToken;
      } while (pageToken && !f.digest);
      // A question with a yes/no answer: scripts test the exit code, people read the line.
      if (f.digest && all.length === 0) {
        if (format === 'table') process.stdout.write('not admitted\n');
        else print(format, { images: all, requireAdmittedImage: requireAll });
        throw new CommanderError(3, 'writ.violation', `${f.digest} was never admitted under an enforce policy`);
      }
      print(format, { images: all, requireAdmittedImage: requireAll }, () => ({
        head: ['DIGEST', 'FIRST ADMITTED', 'LAST ADMITTED'],
        body: all.map((i) => [i.digest, i.firstSeen, i.lastSeen]),
      }));
      if (format === 'table' && requireAll) process.stderr.write('the server requires an admitted image for every entry (--require-admitted-image)\n');
    });
}
