/** `writ workload list`: what runs where now, as the agents report it (issue 13). */
import type { Command } from 'commander';
import { WritError, parseSpiffeId } from '@writ/spiffe';
import type { ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

export interface WorkloadJson {
  agentId: string;
  node: string | null;
  key: string;
  spiffeIds: string[];
  owner: string | null;
  namespace: string | null;
  podName: string | null;
  containerName: string | null;
  imageDigest: string | null;
  imageName: string | null;
  running: boolean;
  firstSeen: string;
  lastSeen: string;
  endedAt: string | null;
  [k: string]: unknown;
}

const DIGEST = /^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

const short = (d: string | null): string => (d ? `${d.slice(0, 19)}…` : '-');

export function registerWorkload(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const workload = program.command('workload').description('workloads the agents attested and served: what runs where, now, and who owns it');
  workload
    .command('list')
    .description(
      'workloads running now (reported by their agent within the last minute), by owner: SPIFFE IDs, node, namespace/pod, image digest as the runtime reports it (pod status imageID)',
    )
    .option('--all', 'also workloads that ended (kept as long as decisions, --decision-retention)')
    .option('--image <digest>', 'only workloads running this image (a manifest or index digest, sha256:...)')
    .option('--spiffe-id <id>', 'only workloads served this SPIFFE ID')
    .option('--limit <n>', 'at most this many (default 1000)')
    .action(async (f: { all?: boolean; image?: string; spiffeId?: string; limit?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      // Checked here too: a typo is a usage error before anything is sent.
      if (f.image && !DIGEST.test(f.image))
        throw new WritError('ERR_FIELD_INVALID', `--image: ${f.image.slice(0, 80)} is not sha256:<64 hex> or sha512:<128 hex>`, { field: 'image' });
      if (f.spiffeId) parseSpiffeId(f.spiffeId);
      const q = new URLSearchParams({ running: f.all ? 'false' : 'true' });
      if (f.image) q.set('image', f.image);
      if (f.spiffeId) q.set('spiffeId', f.spiffeId);
      if (f.limit) q.set('limit', f.limit);
      const res = await api.call<{ workloads: WorkloadJson[]; truncated: boolean }>('GET', `/v1/workloads?${q}`);
      const rows = [...res.workloads].sort(
        (a, b) =>
          (a.owner ?? '\uffff').localeCompare(b.owner ?? '\uffff') || a.spiffeIds.join().localeCompare(b.spiffeIds.join()) || a.key.localeCompare(b.key),
      );
      print(format, res, () => ({
        head: ['OWNER', 'SPIFFE ID', 'NODE', 'WHERE', 'IMAGE', 'DIGEST', ...(f.all ? ['STATE'] : []), 'SINCE'],
        body: rows.map((w) => [
          w.owner ?? '-',
          w.spiffeIds.join(','),
          w.node ?? '-',
          w.podName ? `${w.namespace ?? ''}/${w.podName}${w.containerName ? `:${w.containerName}` : ''}` : w.key,
          w.imageName ?? '-',
          short(w.imageDigest),
          ...(f.all ? [w.running ? 'running' : w.endedAt ? `ended ${w.endedAt}` : 'not reported'] : []),
          w.firstSeen,
        ]),
      }));
      if (format === 'table' && res.truncated) process.stderr.write(`more workloads than shown: give --limit or a filter\n`);
    });
}
