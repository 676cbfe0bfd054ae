/** `writ admission events` (the webhook's verdicts, from the server) and `writ admission manifests` (the two webhook configurations, offline). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { WritError, parseDuration } from '@writ/spiffe';
import { ApiClient, connectionOf } from './client.ts';
import { checkFormat, print, stdoutClosed, streamed } from './output.ts';
import type { Globals } from './program.ts';

interface EventRow {
  id: string;
  at: string;
  uid: string;
  operation: string;
  namespace: string;
  kind: string;
  name: string;
  subResource: string;
  hook: string;
  allowed: boolean;
  mode: string;
  dryRun: boolean;
  message: string;
  images: Array<{ image: string; digest?: string; signedBy: string[] }>;
  controls: string[];
  exceptions: Array<{ name: string; controls: string[]; containers: string[] }>;
  policies: string[];
}

const verdictOf = (e: EventRow): string => `${e.allowed ? 'allowed' : 'denied'}${e.dryRun ? ' (dry run)' : ''}`;
const objectOf = (e: EventRow): string => `${e.kind}/${e.name || '(unnamed)'}${e.subResource ? `/${e.subResource}` : ''}`;
/** A tag with the start of the digest it resolved to; a digest reference once, shortened the same way. */
const imagesOf = (e: EventRow): string =>
  e.images
    .map((i) => {
      const at = i.image.indexOf('@');
      const name = at < 0 ? i.image : i.image.slice(0, at);
      const digest = i.digest ?? (at < 0 ? undefined : i.image.slice(at + 1));
      return digest ? `${name}@${digest.slice(0, 19)}` : i.image;
    })
    .join(',');

/** `--since 15m` or `--since 2026-12-01T10:00:00Z`: how far back, as an instant. */
export function sinceOf(v: string, now = Date.now()): string {
  if (/^\d{4}-\d\d-\d\dT/.test(v)) {
    const t = Date.parse(v);
    if (!Number.isFinite(t) || !/(Z|[+-]\d\d:\d\d)$/i.test(v))
      throw new WritError('ERR_FIELD_INVALID', `--since ${JSON.stringify(v.slice(0, 40))}: an RFC 3339 time needs a zone, like 2026-12-01T10:00:00Z`, {
        field: 'since',
      });
    return new Date(t).toISOString();
  }
  return new Date(now - parseDuration(v, 'since', 366 * 86_400_000)).toISOString();
}

const eventRows = (rows: EventRow[]) => () => ({
  head: ['TIME', 'VERDICT', 'MODE', 'NAMESPACE', 'OBJECT', 'HOOK', 'CONTROLS', 'EXCEPTIONS', 'IMAGES'],
  body: rows.map((e) => [
    e.at,
    verdictOf(e),
    e.mode || '-',
    e.namespace || '-',
    objectOf(e),
    e.hook || '-',
    e.controls.join(',') || '-',
    e.exceptions.map((x) => x.name).join(',') || '-',
    imagesOf(e) || '-',
  ]),
});

const eventLine = (e: EventRow): string =>
  `${e.at} ${e.hook || '-'} ${verdictOf(e).toUpperCase()} ${e.namespace || '-'} ${objectOf(e)}${e.mode ? ` [${e.mode}]` : ''}${e.controls.length ? ` controls=${e.controls.join(',')}` : ''}${e.exceptions.length ? ` exceptions=${e.exceptions.map((x) => x.name).join(',')}` : ''}${e.message ? `: ${e.message}` : ''}`;

/** `writ admission events [--namespace NS] [--denied|--allowed] [--since 1h] [--limit N] [--follow]`. */
export function registerAdmissionEvents(admission: Command): void {
  admission
    .command('events')
    .description('admission verdicts of the webhook, newest first: namespace, object, images with digests, verdict, controls, exceptions used')
    .option('-n, --namespace <ns>', 'only this namespace')
    .option('--denied', 'only denials')
    .option('--allowed', 'only admissions')
    .option('--since <duration|time>', 'how far back: a duration like 15m, or an RFC 3339 time like 2026-12-01T10:00:00Z', '1h')
    .option('--limit <n>', 'at most this many (newest first)', '100')
    .option('-f, --follow', 'then print verdicts as they are stored (Ctrl-C to stop); -o json: one object per line')
    .action(async (f: { namespace?: string; denied?: boolean; allowed?: boolean; since: string; limit: string; follow?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>();
      const format = checkFormat(g.output);
      if (f.denied && f.allowed) throw new WritError('ERR_FIELD_INVALID', '--denied and --allowed exclude each other', { field: 'denied' });
      if (!/^\d{1,5}$/.test(f.limit) || Number(f.limit) < 1 || Number(f.limit) > 10_000)
        throw new WritError('ERR_FIELD_INVALID', '--limit must be a whole number from 1 to 10000', { field: 'limit' });
      const api = new ApiClient(connectionOf(g));
      const filters = new URLSearchParams();
      if (f.namespace) filters.set('namespace', f.namespace);
      if (f.denied || f.allowed) filters.set('allowed', f.allowed ? 'true' : 'false');
      const since = sinceOf(f.since);
      const first = await api.call<{ events: EventRow[]; cursor: string }>(
        'GET',
        `/v1/admission/events?${filters}&${new URLSearchParams({ since, limit: f.limit })}`,
      );
      if (!f.follow) return print(format, first.events, eventRows(first.events));
      const out = (e: EventRow): void => void process.stdout.write(streamed(format, e, () => eventLine(e)));
      first.events.reverse().forEach(out);
      const shown = new Set(first.events.map((e) => e.id));
      let cursor = first.cursor;
      // Until Ctrl-C, or until the reader of stdout goes away (`| head -5`).
      while (!stdoutClosed.signal.aborted) {
        const res = await api.call<{ events: EventRow[]; cursor: string }>(
          'GET',
          `/v1/admission/events?${filters}&${new URLSearchParams({ after: cursor, limit: '1000' })}`,
        );
        for (const e of res.events) if (!shown.has(e.id)) out(e);
        shown.clear();
        cursor = res.cursor;
        if (res.events.length < 1000) await new Promise((r) => setTimeout(r, 1000));
      }
    });
}

export interface ManifestOptions {
  readonly namespace: string;
  readonly service: string;
  readonly port: number;
  /** PEM of the server's trust bundle (DATA_DIR/bundle.pem): what the API server checks the webhook's certificate against. */
  readonly caPem: string;
  readonly failurePolicy: 'Fail' | 'Ignore';
  readonly timeoutSeconds: number;
}

/** The kinds Writ judges: pods (and their ephemeral containers) and every workload with a pod template. */
const RULES = [
  { apiGroups: [''], apiVersions: ['v1'], resources: ['pods', 'pods/ephemeralcontainers', 'replicationcontrollers', 'podtemplates'] },
  { apiGroups: ['apps'], apiVersions: ['v1'], resources: ['deployments', 'replicasets', 'statefulsets', 'daemonsets'] },
  { apiGroups: ['batch'], apiVersions: ['v1'], resources: ['jobs', 'cronjobs'] },
].map((r) => ({ operations: ['CREATE', 'UPDATE'], ...r, scope: 'Namespaced' }));

/** A ValidatingWebhookConfiguration and a MutatingWebhookConfiguration (admissionregistration.k8s.io/v1) for the server's admission listener. */
export function webhookManifests(o: ManifestOptions): Array<Record<string, unknown>> {
  const webhook = (hook: 'validate' | 'mutate'): Record<string, unknown> => ({
    name: `${hook}.admission.writ.dev`,
    admissionReviewVersions: ['v1'],
    clientConfig: {
      service: { namespace: o.namespace, name: o.service, path: `/v1/admission/${hook}`, port: o.port },
      caBundle: Buffer.from(o.caPem).toString('base64'),
    },
    rules: RULES,
    // Fail: a pod is never admitted unchecked when Writ is down (see docs/admission.md for Ignore).
    failurePolicy: o.failurePolicy,
    matchPolicy: 'Equivalent',
    // The control plane and Writ itself stay schedulable whatever Writ answers.
    namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', o.namespace] }] },
    sideEffects: 'None',
    timeoutSeconds: o.timeoutSeconds,
    ...(hook === 'mutate' ? { reinvocationPolicy: 'IfNeeded' } : {}),
  });
  const meta = { name: 'writ-admission', labels: { 'app.kubernetes.io/name': 'writ', 'app.kubernetes.io/component': 'admission' } };
  return [
    { apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: meta, webhooks: [webhook('mutate')] },
    { apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingWebhookConfiguration', metadata: meta, webhooks: [webhook('validate')] },
  ];
}

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** `writ admission manifests [--namespace writ-system] [--service writ-admission] [--port 8444] [--ca-file DATA_DIR/bundle.pem]`. */
export function registerAdmissionManifests(admission: Command): void {
  admission
    .command('manifests')
    .description(
      'print the MutatingWebhookConfiguration and ValidatingWebhookConfiguration for the admission listener (caBundle from --ca-file, DATA_DIR/bundle.pem); pipe to kubectl apply -f -',
    )
    .option('--namespace <ns>', "the namespace of Writ's Service (left out of the webhooks, with kube-system)", 'writ-system')
    .option('--service <name>', 'the Service in front of the admission listener', 'writ-admission')
    .option('--port <port>', "the Service's port", '8444')
    .option('--failure-policy <policy>', 'Fail (default: nothing is admitted unchecked) or Ignore (admit when Writ cannot answer)', 'Fail')
    .option('--timeout <seconds>', 'timeoutSeconds: above the server --admission-budget (default 2s), at most 30', '5')
    .option('--data-dir <dir>', "the server's data directory: the caBundle is its bundle.pem (instead of --ca-file)")
    .action((f: { namespace: string; service: string; port: string; failurePolicy: string; timeout: string; dataDir?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>();
      for (const [flag, v] of [
        ['--namespace', f.namespace],
        ['--service', f.service],
      ] as const)
        if (!NAME.test(v))
          throw new WritError('ERR_FIELD_INVALID', `${flag} ${JSON.stringify(v.slice(0, 80))} is not a Kubernetes name (a DNS label)`, {
            field: flag.slice(2),
          });
      const port = Number(f.port);
      if (!/^\d{1,5}$/.test(f.port) || port < 1 || port > 65535) throw new WritError('ERR_FIELD_INVALID', '--port must be from 1 to 65535', { field: 'port' });
      if (f.failurePolicy !== 'Fail' && f.failurePolicy !== 'Ignore')
        throw new WritError('ERR_FIELD_INVALID', '--failure-policy must be Fail or Ignore', { field: 'failurePolicy' });
      const timeoutSeconds = Number(f.timeout);
      if (!/^\d{1,2}$/.test(f.timeout) || timeoutSeconds < 1 || timeoutSeconds > 30)
        throw new WritError('ERR_FIELD_INVALID', '--timeout must be whole seconds from 1 to 30 (the API server allows no more)', { field: 'timeout' });
      const caFile = f.dataDir ? join(f.dataDir, 'bundle.pem') : (g.caFile ?? process.env['WRIT_CA_FILE']);
      if (!caFile)
        throw new WritError('ERR_CONFIG_INVALID', "needs --ca-file DATA_DIR/bundle.pem (the server's trust bundle), --data-dir DATA_DIR or WRIT_CA_FILE", {
          field: 'caFile',
        });
      let caPem: string;
      try {
        caPem = readFileSync(caFile, 'utf8');
      } catch (err) {
        throw new WritError('ERR_CONFIG_INVALID', `cannot read --ca-file ${caFile}: ${(err as NodeJS.ErrnoException).code}`, { field: 'caFile' });
      }
      if (!caPem.includes('-----BEGIN CERTIFICATE-----'))
        throw new WritError('ERR_CONFIG_INVALID', `--ca-file ${caFile} holds no PEM certificate (use DATA_DIR/bundle.pem)`, { field: 'caFile' });
      const docs = webhookManifests({ namespace: f.namespace, service: f.service, port, caPem, failurePolicy: f.failurePolicy, timeoutSeconds });
      const format = checkFormat(g.output);
      if (format === 'json') return void process.stdout.write(`${JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }, null, 2)}\n`);
      process.stdout.write(docs.map((d) => stringify(d)).join('---\n'));
    });
}
