/**
 * Proxy benchmark. Same two-hop topology for both proxies, since wrk cannot present client
 * certificates: client -> outbound proxy (plaintext in, mTLS out) -> inbound proxy (mTLS in,
 * plaintext out) -> app. Writ: two `writ proxy` processes. nginx (Debian): two instances likewise,
 * client certificates = SVIDs minted by Writ. Latency at a fixed 1,000 rps from an
 * open-loop client (Debian's wrk has no fixed-rate mode); peak throughput with wrk.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { percentile, row } from './util.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const WRIT = join(ROOT, 'packages/cli/bin/writ.js');
const TD = 'spiffe://bench.example/ns';
const CLIENT = `${TD}/client/sa/app`;
const APP = `${TD}/app/sa/api`;

const freePort = (): Promise<number> =>
  new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => r(p));
    });
  });

/**
 * A child process. `ownSession` starts it in a session of its own (setsid), as nginx puts itself
 * when it daemonizes: with the kernel's autogroup scheduling, a session is a scheduling group, and
 * a proxy sharing the benchmark's group with the client, the app, the agent and the server gets a
 * share of the CPU that nginx, alone in its group, does not have to share (measured: ~10% of peak).
 */
function child(args: string[], env: NodeJS.ProcessEnv = {}, ready?: RegExp, ownSession = false): Promise<ChildProcess & { output: string }> {
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env }, detached: ownSession }) as ChildProcess & {
    output: string;
  };
  c.output = '';
  if (!ready) {
    c.stdout!.resume();
    return Promise.resolve(c);
  }
  return new Promise((resolve, reject) => {
    c.stdout!.on('data', (d: Buffer) => {
      c.output += d.toString();
      if (ready.test(c.output)) {
        c.stdout!.removeAllListeners('data');
        c.stdout!.resume();
        resolve(c);
      }
    });
    c.once('exit', (code) => reject(new Error(`${args[1]} exited ${code}`)));
  });
}

async function waitPort(port: number): Promise<void> {
  const { connect } = await import('node:net');
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${port}`);
}

/**
 * Open-loop requests at a fixed rate from a separate load-generator process (bench/loadgen.ts),
 * after a 3 s warm-up at the same rate (a JIT-compiled proxy's first few thousand requests are
 * not its steady state): steady-state request latency.
 */
async function fixedRate(port: number, rps: number, seconds: number, warmUp = true): Promise<number[]> {
  const gen = (s: number): { latencies: number[]; errors: number } =>
    JSON.parse(
      execFileSync(process.execPath, ['--max-semi-space-size=32', join(ROOT, 'bench/loadgen.ts'), String(port), String(rps), String(s)], {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      }),
    );
  if (warmUp) gen(3);
  const r = gen(seconds);
  if (r.errors) console.log(`  (${r.errors} of ${rps * seconds} requests to port ${port} failed)`);
  return r.latencies;
}

/**
 * wrk at (about) a fixed rate: Debian's wrk has no -R, so each of 10 connections waits 10 ms
 * (wrk's `delay()` hook) between its requests: 10 x 100/s, less the requests' own latency.
 */
function wrkPaced(port: number, dir: string): { rps: number; p50: number; p99: number } {
  const script = join(dir, 'pace.lua');
  writeFileSync(script, 'function delay()\n  return 10\nend\n');
  const out = execFileSync('wrk', ['-t1', '-c10', '-d5s', '--latency', '-s', script, `http://127.0.0.1:${port}/v1/items/1`], { encoding: 'utf8' });
  const ms = (q: string): number => {
    const m = new RegExp(`${q}%\\s+([\\d.]+)(us|ms|s)`).exec(out)!;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]), p50: ms('50'), p99: ms('99') };
}

/** A process and its descendants (a proxy's cluster workers, nginx's workers). */
function tree(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(d)]);
    } catch {
      /* gone */
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(parents.get(out[i]!) ?? []));
  return out;
}

/** CPU seconds (user + system) used so far by these processes. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return ticks / 100; // USER_HZ
}

/** CPU seconds of this process's finished children (wrk, once it has exited and been waited for). */
function childrenCpuSeconds(): number {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}

/** Named process groups whose CPU time is charged to the requests of a peak run. */
type Groups = Record<string, () => number[]>;

/**
 * Peak throughput: 5 s of wrk after 2 s of it (a JIT-compiled proxy's first seconds at full load
 * are not its steady state), and the CPU time each process group spent per request meanwhile:
 * on a shared 2-core box that is what decides the peak, and it is far steadier than the rate.
 */
function wrk(port: number, groups: Groups = {}): { rps: number; cpuUs: Record<string, number> } {
  execFileSync('wrk', ['-t2', '-c64', '-d2s', `http://127.0.0.1:${port}/v1/items/1`], { encoding: 'utf8' });
  const pids = Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, f()]));
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)]));
  const wrkBefore = childrenCpuSeconds();
  const out = execFileSync('wrk', ['-t2', '-c64', '-d5s', `http://127.0.0.1:${port}/v1/items/1`], { encoding: 'utf8' });
  const requests = Number(/(\d+) requests in/.exec(out)![1]);
  const cpuUs = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, ((cpuSeconds(p) - before[k]!) * 1e6) / requests]));
  cpuUs['wrk'] = ((childrenCpuSeconds() - wrkBefore) * 1e6) / requests;
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]), cpuUs };
}

/**
 * Peak throughput of two paths, 3 s of wrk on each in turn, `rounds` times: the median of the
 * per-round ratios. The machine's speed drifts over minutes (other tenants); alternating short runs
 * compares the paths under the same conditions.
 */
function alternate(a: number, b: number, rounds = 3): { ratio: number; min: number; max: number } {
  const run = (port: number): number =>
    Number(/Requests\/sec:\s+([\d.]+)/.exec(execFileSync('wrk', ['-t2', '-c64', '-d3s', `http://127.0.0.1:${port}/v1/items/1`], { encoding: 'utf8' }))![1]);
  const ratios: number[] = [];
  for (let i = 0; i < rounds; i++) ratios.push(run(a) / run(b));
  ratios.sort((x, y) => x - y);
  return { ratio: ratios[Math.floor(ratios.length / 2)]!, min: ratios[0]!, max: ratios.at(-1)! };
}

/**
 * Latency of two paths at 1,000 rps, 5 s on each in turn, `rounds` times (both already warm): the
 * median over the rounds of each path's p50 and p99. A single 5 s run's p99 moves by 2x between
 * runs on this kind of machine, for every path.
 */
async function alternateLatency(a: number, b: number, rounds = 3): Promise<{ p50: [number, number]; p99: [number, number]; p99s: [number[], number[]] }> {
  const runs: [number[][], number[][]] = [[], []];
  for (let i = 0; i < rounds; i++) for (const [k, port] of [a, b].entries()) runs[k as 0 | 1].push(await fixedRate(port, 1000, 5, false));
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const at = (k: 0 | 1, q: number): number[] => runs[k].map((l) => percentile(l, q));
  return { p50: [median(at(0, 50)), median(at(1, 50))], p99: [median(at(0, 99)), median(at(1, 99))], p99s: [at(0, 99), at(1, 99)] };
}

const showCpu = (cpuUs: Record<string, number>): string =>
  Object.entries(cpuUs)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(', ');

export async function run(): Promise<void> {
  for (const tool of ['wrk', 'nginx']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`the proxy benchmark needs ${tool}: apt-get install -y wrk nginx-light`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-proxy-'));
  const kids: ChildProcess[] = [];
  const nginxConfs: string[] = [];
  try {
    const srv = await child(
      [WRIT, 'server', 'start', '--data-dir', join(dir, 'srv'), '--trust-domain', 'bench.example', '--listen', '127.0.0.1:0'],
      {},
      /"writ server listening"/,
    );
    kids.push(srv);
    const env = { WRIT_CA_FILE: join(dir, 'srv', 'bundle.pem'), WRIT_TOKEN: readFileSync(join(dir, 'srv', 'admin.token'), 'utf8').trim() };
    const serverUrl = /"url":"(https:\/\/[^"]+)"/.exec(srv.output)![1]!;
    const w = (args: string[]): string =>
      execFileSync(process.execPath, [WRIT, ...args], { encoding: 'utf8', env: { ...process.env, ...env, WRIT_SERVER: serverUrl } });
    const [appPort, inPort, outPort, ngIn, ngOut, ngToWrit, writToNg] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    // DNS name localhost on the app's SVID: nginx as a client verifies the name as well as the chain.
    for (const id of [CLIENT, APP])
      w([
        'entry',
        'create',
        '--spiffe-id',
        id,
        '--parent-id',
        'spiffe://bench.example/writ/agent/bench',
        '--selector',
        `unix:uid:${process.getuid!()}`,
        '--dns-name',
        'localhost',
      ]);
    writeFileSync(
      join(dir, 'p.yaml'),
      `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: app }\nspec:\n  to: ${APP}\n  rules: [{ effect: allow, from: ["${TD}/client/**"], actions: [{ methods: [GET], paths: ["/v1/items/*"] }, { ports: [${inPort}] }] }]\n`,
    );
    w(['policy', 'apply', '-f', join(dir, 'p.yaml')]);
    const token = w(['token', 'create', '--node-name', 'bench']).trim();
    const sock = join(dir, 'api.sock');
    const agent = await child([WRIT, 'agent', 'start', '--data-dir', join(dir, 'agent'), '--socket', sock, '--join-token', token, '--log-level', 'warn'], {
      ...env,
      WRIT_SERVER: serverUrl,
    });
    kids.push(agent);
    for (let i = 0; i < 100; i++) {
      try {
        execFileSync(process.execPath, [WRIT, 'svid', 'fetch', '--socket', sock], { stdio: 'ignore' });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const app = await child(
      [
        '-e',
        `require('http').createServer((q, s) => { s.setHeader('content-type', 'application/json'); s.end('{"ok":true}'); }).listen(${appPort}, '127.0.0.1', () => console.log('up'))`,
      ],
      {},
      /up/,
    );
    kids.push(app);
    // BENCH_PROXY_MODE=tcp measures the inbound as a plain authorized pipe (no HTTP parsing).
    // Each writ proxy runs 2 worker processes (`--workers 2`), as nginx runs 2 workers (BENCH_WORKERS=N to change).
    const workers = ['--workers', process.env['BENCH_WORKERS'] ?? '2'];
    const writIn = await child(
      [
        WRIT,
        'proxy',
        ...workers,
        '--socket',
        sock,
        '--spiffe-id',
        APP,
        '--inbound',
        `127.0.0.1:${inPort}=127.0.0.1:${appPort}`,
        '--inbound-mode',
        process.env['BENCH_PROXY_MODE'] ?? 'http',
        '--log-level',
        'warn',
      ],
      {},
      undefined,
      true,
    );
    kids.push(writIn);
    // The second outbound goes to nginx's inbound: one writ hop, the other nginx.
    const writOut = await child(
      [
        WRIT,
        'proxy',
        ...workers,
        '--socket',
        sock,
        '--spiffe-id',
        CLIENT,
        '--outbound',
        `127.0.0.1:${outPort}=${APP}@127.0.0.1:${inPort}`,
        '--outbound',
        `127.0.0.1:${writToNg}=${APP}@127.0.0.1:${ngIn}`,
        '--log-level',
        'warn',
      ],
      {},
      undefined,
      true,
    );
    kids.push(writOut);
    await waitPort(inPort!);
    await waitPort(outPort!);
    // nginx with SVIDs minted by the same CA.
    w(['svid', 'mint-x509', '--spiffe-id', APP, '--dns-name', 'localhost', '--out', join(dir, 'ng-app')]);
    w(['svid', 'mint-x509', '--spiffe-id', CLIENT, '--out', join(dir, 'ng-client')]);
    // An nginx outbound: plaintext in on `listen`, mTLS out to `upstream` with the client SVID.
    const outboundBlock = (listen: number, upstream: string): string => `  server {
    listen 127.0.0.1:${listen};
    location / {
      proxy_pass https://${upstream}; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate ${dir}/ng-client/svid.pem; proxy_ssl_certificate_key ${dir}/ng-client/svid.key;
      proxy_ssl_trusted_certificate ${dir}/ng-client/bundle.pem; proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_session_reuse on;
    }
  }`;
    // Two nginx instances, as there are two writ proxies: the outbound and the inbound are separate
    // processes in a deployment (other hosts, other pods). One instance with both server blocks let
    // a worker carry a request across both hops inside one process, with no wake-up or context
    // switch between them, which neither writ nor a real deployment gets.
    const nginxConfig = (name: string, body: string): string => {
      writeFileSync(
        join(dir, `${name}.conf`),
        `worker_processes 2;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
${body}
}
`,
      );
      return join(dir, `${name}.conf`);
    };
    const nginxIn = nginxConfig(
      'nginx-in',
      `  upstream app_plain { server 127.0.0.1:${appPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${ngIn} ssl;
    ssl_certificate ${dir}/ng-app/svid.pem; ssl_certificate_key ${dir}/ng-app/svid.key;
    ssl_client_certificate ${dir}/ng-app/bundle.pem; ssl_verify_client on;
    location / { proxy_pass http://app_plain; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header x-peer $ssl_client_s_dn; }
  }`,
    );
    const nginxOut = nginxConfig(
      'nginx-out',
      `  upstream app_tls { server 127.0.0.1:${ngIn}; keepalive 64; }
${outboundBlock(ngOut!, 'app_tls')}
  # nginx as the mTLS client in front of the writ inbound: wrk cannot present a client certificate.
  upstream writ_in { server 127.0.0.1:${inPort}; keepalive 64; }
${outboundBlock(ngToWrit!, 'writ_in')}`,
    );
    nginxConfs.push(nginxIn, nginxOut);
    for (const conf of nginxConfs) execFileSync('nginx', ['-c', conf, '-p', dir]);
    const [nginxInPid, nginxOutPid] = ['nginx-in', 'nginx-out'].map((n) => Number(readFileSync(join(dir, `${n}.pid`), 'utf8')));
    const groups: Groups = {
      'writ in': () => tree(writIn.pid!),
      'writ out': () => tree(writOut.pid!),
      'nginx in': () => tree(nginxInPid!),
      'nginx out': () => tree(nginxOutPid!),
      app: () => [app.pid!],
      agent: () => [agent.pid!],
      server: () => [srv.pid!],
    };
    // Warm up all paths and check they answer.
    console.log(`ports: direct ${appPort}, writ x2 ${outPort}, nginx x2 ${ngOut}, nginx -> writ ${ngToWrit}, writ -> nginx ${writToNg}`);
    for (const p of [appPort, outPort, ngOut, ngToWrit, writToNg]) await fixedRate(p!, 200, 1);
    if (process.env['BENCH_HOLD']) {
      // For profiling by hand: everything stays up until Ctrl-C (or SIGTERM), then is torn down.
      console.log(
        `holding; pids: ${Object.entries(groups)
          .map(([k, f]) => `${k} ${f().join(' ')}`)
          .join('; ')}`,
      );
      await new Promise((r) => (process.once('SIGINT', r), process.once('SIGTERM', r)));
      return;
    }

    const paths = {
      direct: appPort!,
      'nginx out -> writ in': ngToWrit!,
      'nginx out -> nginx in': ngOut!,
      'writ out -> nginx in': writToNg!,
      'writ out -> writ in': outPort!,
    };
    console.log('\nProxy benchmark. Each path: open-loop 1,000 rps for 5 s (latency), then wrk -c64 (peak and CPU per request).\n');
    row('path', 'p50 @1,000 rps', 'p99 @1,000 rps', 'peak rps', 'CPU µs per request at peak');
    const lat: Record<string, number[]> = {};
    for (const [name, port] of Object.entries(paths)) {
      lat[name] = await fixedRate(port, 1000, 5);
      const r = wrk(port, groups);
      const cpu = Object.fromEntries(Object.entries(r.cpuUs).filter(([, v]) => v >= 0.5));
      row(name, `${percentile(lat[name], 50).toFixed(3)} ms`, `${percentile(lat[name], 99).toFixed(3)} ms`, `${Math.round(r.rps)}`, showCpu(cpu));
    }
    const vs = (a: string, b: string): string => {
      const [la, lb] = [lat[a]!, lat[b]!];
      const alt = alternate(paths[a as keyof typeof paths], paths[b as keyof typeof paths]);
      return `p50 ${(percentile(la, 50) - percentile(lb, 50)).toFixed(3)} ms, p99 ${(percentile(la, 99) - percentile(lb, 99)).toFixed(3)} ms, peak ${alt.ratio.toFixed(2)}x (${alt.min.toFixed(2)}-${alt.max.toFixed(2)} over 3 alternating runs)`;
    };
    console.log('\nOne writ proxy in place of one nginx (targets: added p50 <= 0.3 ms, p99 <= 1.5 ms, peak >= 0.7x):');
    console.log(`  inbound (mTLS in, plaintext out):  ${vs('nginx out -> writ in', 'nginx out -> nginx in')}`);
    console.log(`  outbound (plaintext in, mTLS out): ${vs('writ out -> nginx in', 'nginx out -> nginx in')}`);
    console.log(`  both hops:                         ${vs('writ out -> writ in', 'nginx out -> nginx in')}`);
    console.log(`  nginx x2 over direct:              ${vs('nginx out -> nginx in', 'direct')}`);

    console.log('\nLatency again, alternating 5 s runs of the two paths 3 times (medians over the runs):');
    for (const [label, a, b] of [
      ['inbound ', 'nginx out -> writ in', 'nginx out -> nginx in'],
      ['outbound', 'writ out -> nginx in', 'nginx out -> nginx in'],
    ] as const) {
      const r = await alternateLatency(paths[a], paths[b]);
      const ms = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join('/');
      console.log(
        `  ${label}: added p50 ${(r.p50[0] - r.p50[1]).toFixed(3)} ms, added p99 ${(r.p99[0] - r.p99[1]).toFixed(3)} ms (p99 runs: writ path ${ms(r.p99s[0])} ms, nginx path ${ms(r.p99s[1])} ms)`,
      );
    }

    console.log('\nThe same at ~1,000 rps from wrk itself (10 connections, 10 ms between requests on each):\n');
    row('path', 'p50', 'p99', 'rps', '');
    for (const [name, port] of Object.entries(paths)) {
      const r = wrkPaced(port, dir);
      row(name, `${r.p50.toFixed(3)} ms`, `${r.p99.toFixed(3)} ms`, `${Math.round(r.rps)}`, '');
    }
  } finally {
    for (const conf of nginxConfs) {
      try {
        execFileSync('nginx', ['-c', conf, '-p', dir, '-s', 'stop'], { stdio: 'ignore' });
      } catch {
        /* not started */
      }
    }
    for (const k of kids.reverse()) k.kill();
    await new Promise((r) => setTimeout(r, 500));
    rmSync(dir, { recursive: true, force: true });
  }
}
