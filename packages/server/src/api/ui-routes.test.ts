/** The dashboard's static routes: the page under its CSP, hashed assets only, and a clear answer when the bundle is not built. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import type { ApiContext } from './context.ts';
import { errorReply, type Reply, type Request, type Route } from './http.ts';
import { routeTable } from './routes.ts';
import { UI_CSP, uiRoutes } from './ui-routes.ts';

function routesFor(uiDir: string): Route[] {
  const { routes, add } = routeTable();
  uiRoutes({} as ApiContext, add, uiDir);
  return routes;
}

async function get(routes: Route[], path: string): Promise<Reply> {
  const route = routes.find((r) => r.method === 'GET' && r.pattern.test(path))!;
  const req = { method: 'GET', path, query: new URLSearchParams(), params: route.pattern.exec(path)!.slice(1) } as unknown as Request;
  try {
    return await route.handler(req);
  } catch (err) {
    assert.ok(isWritError(err), String(err));
    return errorReply(err);
  }
}

describe('/ui', () => {
  it('says the bundle is not built, and how to build it, with a 503 and a stable code', async () => {
    const r = await get(routesFor(join(tmpdir(), 'writ-no-such-ui')), '/ui');
    assert.equal(r.status, 503);
    const body = r.body as { code: string; message: string };
    assert.equal(body.code, 'ERR_UI_NOT_BUILT');
    assert.match(body.message, /npm run build/);
  });

  it('serves the page under the strict CSP, and only hashed asset names, cached for a year', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-ui-'));
    try {
      mkdirSync(join(dir, 'assets'));
      writeFileSync(join(dir, 'index.html'), '<!doctype html><script type="module" src="/ui/assets/app-ABCDEFGH.js"></script>');
      writeFileSync(join(dir, 'assets', 'app-ABCDEFGH.js'), 'console.log(1)');
      writeFileSync(join(dir, 'secret.txt'), 'not an asset');
      const routes = routesFor(dir);
      const page = await get(routes, '/ui');
      assert.equal(page.status, 200);
      assert.equal(page.headers?.['content-security-policy'], UI_CSP);
      assert.match(UI_CSP, /default-src 'self'.*script-src 'self';.*frame-ancestors 'none'/);
      const js = await get(routes, '/ui/assets/app-ABCDEFGH.js');
      assert.equal(js.contentType, 'text/javascript; charset=utf-8');
      assert.equal(js.headers?.['cache-control'], 'public, max-age=31536000, immutable');
      for (const bad of ['/ui/assets/..%2Fsecret.txt', '/ui/assets/secret.txt', '/ui/assets/app-abcdefgh.js', '/ui/assets/app-ABCDEFGH.js.map'])
        assert.equal((await get(routes, bad)).status, 404, bad);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
