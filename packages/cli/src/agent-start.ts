/**
 * `writ agent start`, and the health endpoint it shares with `writ proxy`. Its own module so that
 * the agent's entry (agent-main.ts) loads only what the agent runs, not the whole CLI.
 */
import { type Command, CommanderError } from 'commander';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { WritError, parseDuration } from '@writ/spiffe';
import { DEFAULT_SERVER } from './client.ts';
import { type Globals, PIN_HELP } from './program.ts';

/** Adds `start` to the `agent` command. */
export function addAgentStart(agent: Command): void {
  agent
    .command('start')
    .description('start an agent in the foreground: attests the node, serves the Workload API on --socket')
    .requiredOption('--data-dir <dir>', 'identity and SVID cache (kept across restarts)')
    .option('--join-token <token>', 'single-use join token (writ token create); needed the first time, and a new one attests again')
    .option('--trust-domain <td>', PIN_HELP.trustDomain)
    .option('--server-spiffe-id <id>', PIN_HELP.serverSpiffeId)
    .option('--socket <path>', 'Workload API socket', '/tmp/writ-agent/public/api.sock')
    .option('--socket-mode <octal>', 'socket file mode (default 0777: attestation decides, not permissions)', '0777')
    .option('--psat-cluster <name>', 'attest with a Kubernetes projected service account token for this cluster (as configured on the server)')
    .option('--psat-token-file <file>', 'the projected token', '/var/run/secrets/tokens/writ-agent')
    .option('--docker-socket <path>', 'enable the docker workload attestor (e.g. /var/run/docker.sock)')
    .option('--containerd-socket <path>', 'enable the containerd workload attestor (e.g. /run/containerd/containerd.sock)')
    .option('--containerd-namespace <ns>', 'containerd namespace', 'k8s.io')
    .option('--kubelet-url <url>', 'enable the k8s workload attestor (e.g. https://127.0.0.1:10250)')
    .option('--kubelet-ca <file>', "the kubelet's serving CA")
    .option('--kubelet-token-file <file>', 'bearer token for the kubelet', '/var/run/secrets/kubernetes.io/serviceaccount/token')
    .option(
      '--workload-report-interval <duration>',
      'how often the workloads served are reported whole to the server, between reports on change (env WRIT_WORKLOAD_REPORT_INTERVAL; 1s to 50s, default 20s: the server counts a workload running for a minute after a report)',
    )
    .option('--health-addr <host:port>', 'serve /livez, /readyz and /metrics over plain HTTP here (off by default), e.g. 127.0.0.1:8081')
    .option('--log-level <level>', 'debug, info (default), warn, error', 'info')
    .action(
      async (
        f: {
          healthAddr?: string;
          workloadReportInterval?: string;
          dataDir: string;
          joinToken?: string;
          trustDomain?: string;
          serverSpiffeId?: string;
          socket: string;
          socketMode: string;
          logLevel: string;
          dockerSocket?: string;
          kubeletUrl?: string;
          kubeletCa?: string;
          kubeletTokenFile: string;
          psatCluster?: string;
          psatTokenFile: string;
          containerdSocket?: string;
          containerdNamespace: string;
        },
        cmd: Command,
      ) => {
        const g = cmd.optsWithGlobals<Globals & { trustDomain?: string; serverSpiffeId?: string }>();
        const server = g.server ?? process.env['WRIT_SERVER'] ?? DEFAULT_SERVER;
        const caFile = g.caFile ?? process.env['WRIT_CA_FILE'];
        if (!caFile) throw new WritError('ERR_CONFIG_INVALID', "the agent needs the server's trust bundle: --ca-file or WRIT_CA_FILE", { field: 'caFile' });
        let caPem: string;
        try {
          caPem = readFileSync(caFile, 'utf8');
        } catch (err) {
          throw new WritError('ERR_CONFIG_INVALID', `cannot read --ca-file ${caFile}: ${(err as NodeJS.ErrnoException).code}`, { field: 'caFile' });
        }
        if (!/^0?[0-7]{3}$/.test(f.socketMode)) throw new CommanderError(2, 'writ.usage', '--socket-mode must be octal like 0777 or 0770');
        const reportEvery = f.workloadReportInterval ?? (process.env['WRIT_WORKLOAD_REPORT_INTERVAL'] || undefined);
        const workloadReportMs = reportEvery === undefined ? undefined : parseDuration(reportEvery, '--workload-report-interval', 50_000, 1000);
        const { Agent, WorkloadApiServer, dockerAttestor, k8sAttestor, containerdAttestor } = await import('@writ/agent');
        const attestors = [
          ...(f.containerdSocket ? [containerdAttestor({ socketPath: f.containerdSocket, namespace: f.containerdNamespace })] : []),
          ...(f.dockerSocket ? [dockerAttestor({ socketPath: f.dockerSocket })] : []),
          ...(f.kubeletUrl
            ? [
                k8sAttestor({
                  kubeletUrl: f.kubeletUrl,
                  ...(f.kubeletCa ? { caFile: f.kubeletCa } : {}),
                  ...(existsSync(f.kubeletTokenFile) ? { tokenFile: f.kubeletTokenFile } : {}),
                }),
              ]
            : []),
        ];
        const pino = (await import('pino')).default;
        const log = pino(
          { level: f.logLevel, base: { svc: 'writ-agent' }, timestamp: pino.stdTimeFunctions.isoTime },
          pino.destination({ dest: 1, sync: false }),
        );
        mkdirSync(dirname(f.socket), { recursive: true });
        const a = new Agent({
          serverUrl: server,
          caPem,
          trustDomain: f.trustDomain ?? g.trustDomain ?? (process.env['WRIT_TRUST_DOMAIN'] || undefined),
          serverSpiffeId: f.serverSpiffeId ?? g.serverSpiffeId ?? (process.env['WRIT_SERVER_SPIFFE_ID'] || undefined),
          joinToken: f.joinToken ?? process.env['WRIT_JOIN_TOKEN'],
          dataDir: f.dataDir,
          log,
          workloadReportMs,
          ...(f.psatCluster ? { psat: { cluster: f.psatCluster, tokenFile: f.psatTokenFile } } : {}),
        });
        let serving = false;
        const health = f.healthAddr
          ? await startHealth(
              f.healthAddr,
              () => agentNotReady(a, serving),
              (pm) => agentMetrics(a, serving, pm),
            )
          : undefined;
        if (health) log.info({ port: health.port }, 'writ agent health endpoint listening');
        await a.start();
        const api = new WorkloadApiServer({ agent: a, socketPath: f.socket, socketMode: parseInt(f.socketMode, 8), log, attestors });
        await api.listen();
        serving = true;
        log.info({ spiffeId: a.spiffeId, socket: f.socket }, 'writ agent serving the Workload API');
        const stop = (): void => {
          a.stop();
          void Promise.all([api.close(), health?.close()]).then(() => process.exit(0));
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        await new Promise(() => undefined);
      },
    );
}

export type ProcessMetrics = (prefix: string) => import('@writ/sdk/internal').MetricFamily[];

/** `--health-addr HOST:PORT` of the agent and the proxy: /livez, /readyz and /metrics (docs/metrics.md). */
export async function startHealth(
  addr: string,
  notReady: () => string | undefined,
  metrics: (processMetrics: ProcessMetrics) => import('@writ/sdk/internal').MetricFamily[],
): Promise<import('@writ/sdk/internal').HealthServer> {
  const m = /^(.+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new CommanderError(2, 'writ.usage', `--health-addr ${JSON.stringify(addr)}: give HOST:PORT, e.g. 127.0.0.1:8081`);
  const { HealthServer, processMetrics } = await import('@writ/sdk/internal');
  const h = new HealthServer({ host: m[1]!.replace(/^\[|\]$/g, ''), port, notReady, metrics: () => metrics(processMetrics) });
  try {
    await h.listen();
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot listen on --health-addr ${addr}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      field: 'healthAddr',
    });
  }
  return h;
}

function agentNotReady(a: import('@writ/agent').Agent, serving: boolean): string | undefined {
  const h = a.health();
  if (!h.attested) return 'attesting to the server';
  if (h.agentSvidExpiresAt !== undefined && h.agentSvidExpiresAt <= Date.now()) return 'the agent SVID has expired';
  if (!serving) return 'starting the Workload API';
  return undefined;
}

function agentMetrics(a: import('@writ/agent').Agent, serving: boolean, processMetrics: ProcessMetrics): import('@writ/sdk/internal').MetricFamily[] {
  const h = a.health();
  const g = (name: string, help: string, value: number) => ({ name, help, type: 'gauge' as const, samples: [{ value }] });
  return [
    g('writ_agent_ready', '1 when /readyz answers 200: the agent holds an unexpired SVID and serves the Workload API.', agentNotReady(a, serving) ? 0 : 1),
    g('writ_agent_server_connected', '1 while the last sync with the server succeeded; 0 while the agent serves from its cache.', h.connected ? 1 : 0),
    g('writ_agent_svid_expiry_timestamp_seconds', "When the agent's own X.509-SVID expires (unix seconds).", Math.floor((h.agentSvidExpiresAt ?? 0) / 1000)),
    g('writ_agent_entries', 'Registration entries the agent holds for its node.', h.entries),
    g('writ_agent_policy_revision', 'The policy revision the agent enforces.', h.policyRevision),
    g('writ_agent_quarantined_identities', 'SPIFFE IDs quarantined on this node.', h.quarantined),
    g('writ_agent_decisions_buffered', 'Decisions waiting to be sent to the server.', h.decisions.buffered),
    {
      name: 'writ_agent_decisions_dropped_total',
      help: 'Decisions dropped because the buffer was full (the server was away too long).',
      type: 'counter',
      samples: [{ value: h.decisions.dropped }],
    },
    ...processMetrics('writ_'),
  ];
}
