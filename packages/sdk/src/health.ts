/**
 * The health and metrics listener of the agent and the proxy (`--health-addr HOST:PORT`), plain
 * HTTP for the kubelet's probes and Prometheus: `/livez` is 200 while the process serves, `/readyz`
 * 200 once it can do its job (the agent holds its SVID and serves the Workload API; the proxy has
 * its identity and listens) and 503 with the reason before, `/metrics` the Prometheus text.
 * It answers nothing else and reads no request body.
 */
import { createServer, type Server } from 'node:http';

/** One sample of a metric family; `labels` are rendered sorted by name. */
export interface MetricSample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter';
  readonly samples: readonly MetricSample[];
}

export interface HealthOptions {
  readonly host: string;
  readonly port: number;
  /** Undefined when ready; otherwise what the process still waits for. */
  readonly notReady: () => string | undefined;
  readonly metrics: () => readonly MetricFamily[];
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/** Prometheus text exposition format 0.0.4. */
export function renderMetrics(families: readonly MetricFamily[]): string {
  let out = '';
  for (const f of families) {
    out += `# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
      const l = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
      out += `${f.name}${l} ${Number.isFinite(s.value) ? s.value : 0}\n`;
    }
  }
  return out;
}

export class HealthServer {
  readonly #o: HealthOptions;
  readonly #server: Server;
  #port = 0;

  constructor(opts: HealthOptions) {
    this.#o = opts;
    this.#server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const reply = (status: number, body: string, type = 'application/json'): void => {
        res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, '{"code":"ERR_METHOD_NOT_ALLOWED","message":"GET only"}\n');
      if (path === '/livez') return reply(200, '{"status":"ok"}\n');
      if (path === '/readyz') {
        const why = this.#o.notReady();
        return why === undefined ? reply(200, '{"status":"ok"}\n') : reply(503, `${JSON.stringify({ status: 'not ready', reason: why })}\n`);
      }
      if (path === '/metrics') return reply(200, renderMetrics(this.#o.metrics()), 'text/plain; version=0.0.4; charset=utf-8');
      reply(404, '{"code":"ERR_NOT_FOUND","message":"/livez, /readyz and /metrics only"}\n');
    });
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 10_000;
  }

  /** Listens; resolves with the port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#o.port, this.#o.host, () => {
        const a = this.#server.address();
        this.#port = typeof a === 'object' && a ? a.port : this.#o.port;
        resolve(this.#port);
      });
    });
  }

  get port(): number {
    return this.#port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** The process metrics every Writ process exports beside its own (same names as the server's prom-client defaults). */
export function processMetrics(prefix: string): MetricFamily[] {
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  return [
    { name: `${prefix}process_resident_memory_bytes`, help: 'Resident memory size in bytes.', type: 'gauge', samples: [{ value: mem.rss }] },
    {
      name: `${prefix}process_cpu_seconds_total`,
      help: 'Total user and system CPU time spent in seconds.',
      type: 'counter',
      samples: [{ value: (cpu.user + cpu.system) / 1e6 }],
    },
    {
      name: `${prefix}process_start_time_seconds`,
      help: 'Start time of the process since unix epoch in seconds.',
      type: 'gauge',
      samples: [{ value: Math.round(Date.now() / 1000 - process.uptime()) }],
    },
  ];
}
