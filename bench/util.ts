import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

/** Calls `fn` repeatedly for about `seconds`, in chunks, and returns operations per second. */
export function rate(seconds: number, fn: (i: number) => void, chunk = 1000): number {
  for (let i = 0; i < chunk; i++) fn(i); // warm-up
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < chunk; i++) fn(n + i);
    n += chunk;
  }
  return n / ((performance.now() - start) / 1000);
}

/** `openssl speed -seconds S ecdsap256`: sign/s and verify/s of one core, measured now. */
export function opensslEcdsaP256(seconds = 3): { sign: number; verify: number } {
  const out = execFileSync('openssl', ['speed', '-seconds', String(seconds), 'ecdsap256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const line = out.split('\n').find((l) => /nistp256/.test(l) && /\d+\.\d+\s+\d+\.\d+\s*$/.test(l));
  if (!line) throw new Error(`cannot read openssl speed output:\n${out}`);
  const nums = line.trim().split(/\s+/).slice(-2).map(Number);
  return { sign: nums[0]!, verify: nums[1]! };
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function row(name: string, value: string, baseline: string, ratio: string, target: string): void {
  console.log(`${name.padEnd(40)} ${value.padStart(14)} ${baseline.padStart(28)} ${ratio.padStart(8)}  ${target}`);
}

/**
 * Splits a keep-alive HTTP/1.1 response stream into responses, for the benchmarks' hand-written
 * clients (their servers answer with Content-Length bodies). One reader per connection.
 */
/** Reads responses off a connection; `closing` when the server said it closes after this one (Connection: close). */
export function responseReader(onResponse: (status: number, body: Buffer, closing: boolean) => void): (d: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.toString('latin1', 0, end);
      const total = end + 4 + Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < total) return;
      const body = buf.subarray(end + 4, total);
      buf = buf.subarray(total);
      onResponse(Number(head.slice(9, 12)), body, /\r\nconnection: *close\r?$/im.test(head));
    }
  };
}

const ROOT = new URL('../', import.meta.url).pathname;

/** The bundled CLI in dist/ is used only while newer than every source: rebuild it when stale, so Writ is measured as shipped. */
export function ensureBundle(): void {
  const newest = (dir: string): number => {
    let t = 0;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules') continue;
      const p = join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }
    return t;
  };
  const dist = join(ROOT, 'dist/writ.js');
  if (existsSync(dist) && statSync(dist).mtimeMs > newest(join(ROOT, 'packages'))) return;
  execFileSync(process.execPath, [join(ROOT, 'scripts/build.mjs')], { stdio: 'inherit' });
}

/**
 * One simulated agent's keep-alive mTLS connection, one request at a time, written and parsed by
 * hand: Node's http client machinery cost more than the server's whole answer, so with it a
 * benchmark measured its own client (propagation, soak).
 */
export class LeanConn {
  readonly #opts: ConnectionOptions;
  #socket: TLSSocket | undefined;
  #waiting: { resolve: (v: { status: number; body: Buffer }) => void; reject: (e: Error) => void } | undefined;

  constructor(opts: ConnectionOptions) {
    this.#opts = opts;
  }

  #lastUsed = 0;

  get busy(): boolean {
    return this.#waiting !== undefined;
  }

  request(method: string, path: string, body?: string): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      // Node servers close a keep-alive connection idle for 5 s: one idle for 4 s is not reused, so
      // a request written into that close does not count as a failure of the server (as in loadgen.ts).
      const now = performance.now();
      if (this.#socket && now - this.#lastUsed > 4000) {
        const old = this.#socket;
        this.#socket = undefined;
        old.removeAllListeners('close');
        old.destroy();
      }
      this.#lastUsed = now;
      if (!this.#socket) {
        const s = tlsConnect(this.#opts);
        s.setNoDelay(true);
        s.on(
          'data',
          responseReader((status, b) => {
            const w = this.#waiting;
            this.#waiting = undefined;
            this.#lastUsed = performance.now();
            w?.resolve({ status, body: b });
          }),
        );
        s.on('error', () => undefined);
        s.on('close', () => {
          if (this.#socket === s) this.#socket = undefined;
          this.#waiting?.reject(new Error('connection closed'));
          this.#waiting = undefined;
        });
        this.#socket = s;
      }
      const head = `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n`;
      if (body === undefined) this.#socket.write(`${head}\r\n`);
      else this.#socket.write(`${head}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  destroy(): void {
    this.#socket?.destroy();
  }
}
