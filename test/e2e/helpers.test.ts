/** The shared e2e helpers that other tests lean on to not flake: a freed port taken before the bind. */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { describe, it } from 'node:test';
import { onFreePorts } from './helpers.ts';

const listen = (port: number): Promise<Server> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
const close = (s: Server): Promise<void> => new Promise((r) => s.close(() => r()));

describe('onFreePorts', () => {
  it('picks fresh ports when one was taken between freePort() and the bind, and binds them', async () => {
    const tried: number[][] = [];
    const taken: Server[] = [];
    try {
      const server = await onFreePorts(2, async (ports) => {
        tried.push(ports);
        // The first time, another process takes the second port first (as any connection's local port may).
        if (tried.length === 1) taken.push(await listen(ports[1]!));
        const a = await listen(ports[0]!);
        try {
          await close(await listen(ports[1]!));
        } catch (err) {
          await close(a);
          throw err;
        }
        return a;
      });
      const bound = (server.address() as { port: number }).port;
      await close(server);
      assert.equal(tried.length, 2, 'tried again once');
      assert.notDeepEqual(tried[1], tried[0], 'with other ports');
      assert.equal(bound, tried[1]![0], 'listening on a port of the second pick');
    } finally {
      for (const s of taken) await close(s);
    }
  });

  it('gives up after its attempts, and at once on any other failure', async () => {
    let n = 0;
    await assert.rejects(
      onFreePorts(1, async () => {
        n++;
        throw new Error('listen EADDRINUSE: address already in use');
      }),
      /EADDRINUSE/,
    );
    assert.equal(n, 3);
    n = 0;
    await assert.rejects(
      onFreePorts(1, async () => {
        n++;
        throw new Error('the child exited 2: bad flag');
      }),
      /bad flag/,
    );
    assert.equal(n, 1);
  });
});
