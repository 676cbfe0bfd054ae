/**
 * The admission benchmark's load generator, run as its own process (pinned to its own core):
 * `node bench/admission/loadgen.ts SPEC.json` POSTs AdmissionReviews over HTTPS keep-alive
 * connections, as kube-apiserver does, and prints {latencies (sorted, ms), errors, seconds, allowed}.
 *
 * Two shapes of load, from SPEC.mode:
 * - `rate`: open loop at SPEC.rps for SPEC.seconds; a request leaves on schedule whether or not
 *   earlier ones have been answered, so a stall shows in the numbers instead of hiding.
 * - `clients`: SPEC.clients connections, each sending its next request as soon as the last is
 *   answered (kube-apiserver under a burst of creates), until SPEC.seconds or SPEC.requests.
 * Requests are pre-serialised and cycled through in order; answers are read just enough (status
 * line, Content-Length, whether `"allowed":true` is in the body).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { connect, type TLSSocket } from 'node:tls';
import { responseReader } from '../util.ts';

export interface LoadSpec {
  port: number;
  path: string;
  /** PEM of the CA that signed the server's certificate. */
  caFile: string;
  servername: string;
  /** A JSON array of request bodies (strings), sent in turn. */
  bodiesFile: string;
  mode: 'rate' | 'clients';
  rps?: number;
  clients?: number;
  seconds: number;
  /** With `clients`: stop after this many requests (each body at most once when it equals their count). */
  requests?: number;
  /** Connections opened (TLS handshakes done) before the clock starts. */
  preopen?: number;
}

export interface LoadResult {
  latencies: number[];
  errors: number;
  seconds: number;
  allowed: number;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadSpec;
const ca = readFileSync(spec.caFile);
const requests = (JSON.parse(readFileSync(spec.bodiesFile, 'utf8')) as string[]).map((b) =>
  Buffer.from(
    `POST ${spec.path} HTTP/1.1\r\nHost: ${spec.servername}:${spec.port}\r\nAccept: application/json, */*\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`,
  ),
);
const ALLOWED = Buffer.from('"allowed":true');
const SLOW = Number(process.env['BENCH_SLOW'] ?? 0);

interface Conn {
  socket: TLSSocket;
  sentAt: number;
  busy: boolean;
  ready: Promise<void>;
}

const latencies: number[] = [];
let errors = 0;
let allowed = 0;
let next = 0;
let session: Buffer | undefined;
let onAnswer: (c: Conn) => void = () => undefined;
let start = performance.now();

function open(): Conn {
  const socket = connect({ port: spec.port, host: '127.0.0.1', servername: spec.servername, ca, ...(session ? { session } : {}) });
  socket.setNoDelay(true);
  socket.on('session', (s: Buffer) => (session = s));
  const c: Conn = { socket, sentAt: 0, busy: false, ready: new Promise((r) => socket.once('secureConnect', () => r())) };
  socket.on(
    'data',
    responseReader((status, body, closing) => {
      if (status !== 200) {
        errors++;
        process.stderr.write(`loadgen: status ${status} at ${(c.sentAt - start).toFixed(0)} ms: ${body.subarray(0, 200).toString()}\n`);
      } else {
        const ms = performance.now() - c.sentAt;
        latencies.push(ms);
        // BENCH_SLOW=MS lists the slow ones with when they were sent, to see whether they cluster.
        if (SLOW && ms > SLOW) process.stderr.write(`slow ${ms.toFixed(1)} ms, sent at ${(c.sentAt - start).toFixed(0)} ms\n`);
        if (body.includes(ALLOWED)) allowed++;
      }
      c.busy = false;
      if (closing) socket.end();
      onAnswer(c);
    }),
  );
  socket.on('error', (e) => process.stderr.write(`loadgen: ${e.message}\n`));
  socket.on('close', () => {
    if (c.busy) {
      errors++;
      c.busy = false;
      process.stderr.write(`loadgen: connection closed with a request in flight, sent at ${(c.sentAt - start).toFixed(0)} ms\n`);
    }
  });
  return c;
}

function send(c: Conn): void {
  c.busy = true;
  c.sentAt = performance.now();
  c.socket.write(requests[next++ % requests.length]!);
}

const pool: Conn[] = [];
for (let i = 0; i < (spec.mode === 'clients' ? spec.clients! : (spec.preopen ?? 16)); i++) pool.push(open());
await Promise.all(pool.map((c) => c.ready));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let total: number;
start = performance.now();
if (spec.mode === 'rate') {
  // Timers fire at best every millisecond, so a tick sends everything that has fallen due; each
  // request is timed from its own write. A connection idle for 4 s is not reused (Node servers
  // close keep-alive connections at 5 s).
  const idle = [...pool];
  onAnswer = (c) => {
    if (!c.socket.destroyed && !c.socket.writableEnded) idle.push(c);
  };
  total = spec.rps! * spec.seconds;
  const interval = 1000 / spec.rps!;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) {
        let c = idle.pop();
        while (c?.sentAt && now - c.sentAt > 4000) c.socket.destroy(), (c = idle.pop());
        send(c ?? open());
        sent++;
      }
      if (sent < total) setTimeout(tick, 0);
      else resolve();
    };
    tick();
  });
} else {
  const end = start + spec.seconds * 1000;
  total = spec.requests ?? Number.POSITIVE_INFINITY;
  let sent = 0;
  onAnswer = (c) => {
    if (sent < total && performance.now() < end && !c.socket.writableEnded) send(c), sent++;
  };
  for (const c of pool) if (sent < total) send(c), sent++;
  while (performance.now() < end && latencies.length + errors < total) await sleep(5);
  total = sent;
}
const deadline = performance.now() + 5000;
while (latencies.length + errors < total && performance.now() < deadline) await sleep(5);
const seconds = (performance.now() - start) / 1000;
errors += total - latencies.length - errors;
latencies.sort((a, b) => a - b);
const result: LoadResult = { latencies, errors, seconds, allowed };
// Exit once the output is flushed: to a pipe, a write is asynchronous and exit would cut it short.
process.stdout.write(JSON.stringify(result), () => process.exit(0));
