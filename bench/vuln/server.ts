/** A real `writ server start` process for the vuln benchmark, and a keep-alive HTTPS client for its admin API. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';

const ROOT = new URL('../../', import.meta.url).pathname;
const WRIT = join(ROOT, 'packages/cli/bin/writ.js');

export interface BenchServer {
  readonly url: string;
  /** The server process's id (its CPU time is in /proc/PID/stat). */
  readonly pid: number;
  /** `method path body?` → status and body; one keep-alive connection at a time. */
  call(method: 'GET' | 'POST', path: string, body?: Buffer): Promise<{ status: number; body: Buffer }>;
  stop(): Promise<void>;
}

const stopChild = (c: ChildProcess): Promise<void> =>
  new Promise((r) => {
    // A child killed by a signal has no exit code but its signal: it has exited, and says so no more.
    if (c.exitCode !== null || c.signalCode !== null) return r();
    c.once('exit', () => r());
    c.kill('SIGTERM');
    setTimeout(() => c.kill('SIGKILL'), 5000).unref();
  });

/** Starts a server on `dataDir` with `db` (`sqlite` or a postgres:// URL) and waits until it listens. */
export async function startServer(dataDir: string, db: string): Promise<BenchServer> {
  const c = spawn(
    process.execPath,
    // BENCH_PROFILE=DIR: the server writes a V8 CPU profile there when it stops (open it in Chrome's DevTools).
    [
      ...(process.env['BENCH_PROFILE'] ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`] : []),
      WRIT,
      'server',
      'start',
      '--data-dir',
      dataDir,
      '--trust-domain',
      'bench.example',
      '--listen',
      '127.0.0.1:0',
      '--db',
      db,
      // BENCH_SERVER_LOG=warn: without the per-request access log (what it costs, measured).
      ...(process.env['BENCH_SERVER_LOG'] ? ['--log-level', process.env['BENCH_SERVER_LOG']] : []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /"url":"(https:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"writ server listening"/.exec(out);
      if (!m) return;
      // Listening: from now on the log is drained, not kept and searched (that cost the load generator CPU).
      c.stdout!.off('data', onData);
      c.stderr!.off('data', onData);
      c.stdout!.resume();
      c.stderr!.resume();
      resolve(m[1]!);
    };
    c.stdout!.on('data', onData);
    c.stderr!.on('data', onData);
    c.once('exit', (code, signal) => reject(new Error(`writ server exited ${code ?? signal}: ${out}`)));
  }).catch(async (err: unknown) => {
    await stopChild(c);
    throw err;
  });
  const ca = readFileSync(join(dataDir, 'bundle.pem'));
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
  const u = new URL(url);
  return {
    url,
    pid: c.pid!,
    call: (method, path, body) =>
      new Promise((resolve, reject) => {
        const req = request(
          {
            agent,
            host: u.hostname,
            port: u.port,
            method,
            path,
            headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json', 'content-length': body.length } : {}) },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (d: Buffer) => chunks.push(d));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(body);
      }),
    stop: async () => {
      agent.destroy();
      await stopChild(c);
    },
  };
}
