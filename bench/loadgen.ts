/**
 * An open-loop HTTP/1.1 load generator, run as its own process by the proxy benchmark:
 * `node bench/loadgen.ts PORT RPS SECONDS` prints the sorted latencies (ms) as JSON.
 *
 * Requests leave on schedule whether or not earlier ones have been answered (a late answer does
 * not delay the next request, so a stall shows in the numbers instead of hiding). Keep-alive
 * connections, requests pre-serialised, answers parsed just enough (status line, Content-Length):
 * the first version used Node's http client in the benchmark process, and its own pauses showed
 * up as p99 outliers on every path.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { responseReader } from './util.ts';

const [port, rps, seconds] = process.argv.slice(2).map(Number) as [number, number, number];
const start = performance.now();
const REQUEST = Buffer.from(`GET /v1/items/1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);

interface Conn {
  socket: Socket;
  sentAt: number;
  busy: boolean;
}

const SLOW = Number(process.env['BENCH_SLOW'] ?? 0);
const idle: Conn[] = [];
const latencies: number[] = [];
let errors = 0;

function open(): Conn {
  const c: Conn = { socket: connect({ port, host: '127.0.0.1', noDelay: true }), sentAt: 0, busy: false };
  c.socket.on(
    'data',
    responseReader((status, _body, closing) => {
      if (status !== 200) {
        errors++;
        process.stderr.write(`loadgen: status ${status} at ${(c.sentAt - start).toFixed(0)} ms\n`);
      } else {
        const ms = performance.now() - c.sentAt;
        latencies.push(ms);
        // BENCH_SLOW=MS lists the slow ones with when they were sent, to see whether they cluster.
        if (SLOW && ms > SLOW) process.stderr.write(`slow ${ms.toFixed(1)} ms, sent at ${(c.sentAt - start).toFixed(0)} ms\n`);
      }
      c.busy = false;
      // nginx closes a client connection after 1,000 requests (keepalive_requests), saying so in the
      // last response: a request sent on it after that would be lost in the close.
      if (closing) c.socket.end();
      else idle.push(c);
    }),
  );
  c.socket.on('error', () => undefined);
  c.socket.on('close', () => {
    if (c.busy) {
      errors++;
      process.stderr.write(`loadgen: connection closed with a request in flight, sent at ${(c.sentAt - start).toFixed(0)} ms\n`);
    }
    c.busy = false;
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
  });
  return c;
}

function send(): void {
  // Connections idle for 4 s are not reused: Node servers close them at 5 s, and a request sent
  // into that close would count as a failure of the path under test.
  let c = idle.pop();
  while (c && performance.now() - c.sentAt > 4000) {
    c.socket.destroy();
    c = idle.pop();
  }
  c ??= open();
  c.busy = true;
  c.sentAt = performance.now();
  c.socket.write(REQUEST);
}

// Timers fire at best every millisecond, so a tick sends everything that has fallen due; each
// request is timed from its own write.
const total = rps * seconds;
const interval = 1000 / rps;
let sent = 0;
await new Promise<void>((resolve) => {
  const tick = (): void => {
    const now = performance.now();
    while (sent < total && start + sent * interval <= now) send(), sent++;
    if (sent < total) setTimeout(tick, 0);
    else resolve();
  };
  tick();
});
const deadline = performance.now() + 5000;
while (latencies.length + errors < total && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
latencies.sort((a, b) => a - b);
// Exit once the output is flushed: to a pipe, a write is asynchronous and exit would cut it short.
process.stdout.write(JSON.stringify({ latencies, errors }), () => process.exit(0));
