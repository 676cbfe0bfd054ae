/** docs/dashboard.md stays true: its ```sh blocks run as written (see guide.ts): the page, a session, its CSRF guard, sign-out. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the dashboard guide runs as written: the page under its CSP, a viewer session reads the graph, a write without CSRF and a replayed cookie refused', async () => {
  const g = await runGuide('docs/dashboard.md', { ports: [7491], minBlocks: 3, timeoutMs: 120_000 });
  try {
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}\n${g.logs(['writ-ui/server.log'])}`);
    assert.match(g.out, /^200 default-src 'self'; script-src 'self';.*frame-ancestors 'none'$/m, 'the page under its CSP');
    assert.match(g.out, /^"role":"viewer"$/m, 'signed in');
    assert.match(
      g.out,
      /^\{"window":\{"from":"[^"]+","to":"[^"]+"\},"nodes":\[\],"rules":\[\],"edges":\[\],"truncated":false\}$/m,
      'the graph read with the cookie',
    );
    assert.match(g.out, /^\{"code":"ERR_CSRF_TOKEN",/m, 'a write without the CSRF value refused');
    assert.match(g.out, /^\{"code":"ERR_GRAPH_WINDOW_TOO_LONG",/m, 'a year refused');
    assert.match(g.out, /^204$/m, 'signed out');
    assert.match(g.out, /^\{"code":"ERR_SESSION_INVALID",/m, 'the replayed cookie refused');
  } finally {
    await g.finish();
  }
});
