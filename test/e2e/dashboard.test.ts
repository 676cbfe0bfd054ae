/**
 * The dashboard end to end (issue 15, section 4), in Debian's Chromium driven headless by
 * playwright-core against real processes: a server, an agent, `writ proxy` in front of an app and
 * for a caller, curl through them. Sign in with a token, see the edge of a real call appear in the
 * service graph, explain it, quarantine the caller from the UI and see its next call refused. A
 * viewer cannot quarantine; a forged cookie, a cookie replayed after sign-out and cross-site writes
 * are refused. Screenshots go to docs/img/ with WRIT_UPDATE_SCREENSHOTS=1.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:http';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  ROOT,
  WRIT,
  applyPolicy,
  cleanup,
  onFreePorts,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type ServerProcess,
} from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const TD = 'spiffe://e2e.test/ns';
const ORDERS = `${TD}/orders/sa/api`;
const WEB = `${TD}/shop/sa/web`;
const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - { name: shop-reads, effect: allow, from: ["${TD}/shop/**"], actions: [{ methods: [GET] }] }
`;
// WRIT_UPDATE_SCREENSHOTS=1 writes them to docs/img (committed); otherwise to a temporary directory.
const IMG = process.env['WRIT_UPDATE_SCREENSHOTS'] ? join(ROOT, 'docs', 'img') : mkdtempSync(join(tmpdir(), 'writ-ui-shots-'));

let srv: ServerProcess;
let agent: AgentProcess;
let app: Server;
let browser: Browser;
const proxies: ChildProcess[] = [];
let webPort = 0;
const tokens = { operator: '', viewer: '' };

function startProxy(args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [WRIT, 'proxy', '--socket', agent.socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_TEST_CONTEXT: '' },
  });
  proxies.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"writ proxy listening"')) resolve(child);
    });
    child.once('exit', (c) => reject(new Error(`proxy exited ${c}: ${err}`)));
  });
}

/** A GET through the web caller's outbound proxy: the HTTP status. */
async function call(path: string): Promise<string> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${webPort}${path}`]);
  return r.stdout.trim();
}

/** A request to the server from outside any browser (an attacker's tool, or a replay): status, code and headers. */
function raw(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; code: string | undefined; body: unknown; headers: Record<string, string | string[] | undefined> }> {
  const u = new URL(path, srv.url);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method,
        ca: readFileSync(join(srv.dataDir, 'bundle.pem')),
        headers: { ...headers, ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          const code = (body as { code?: string } | undefined)?.code;
          resolve({ status: res.statusCode ?? 0, code, body, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function ok(args: string[]): Promise<string> {
  const r = await writ(srv, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A new browser context (its own cookies) on /ui, signed in with `token`. */
async function signIn(token: string): Promise<Page> {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 760 } });
  const page = await ctx.newPage();
  const violations: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) violations.push(m.text());
    else if (m.type() === 'error') process.stderr.write(`browser console: ${m.text()}\n`);
  });
  page.on('pageerror', (err) => process.stderr.write(`browser page error: ${err.message}\n`));
  (page as Page & { cspViolations?: string[] }).cspViolations = violations;
  await page.goto(`${srv.url}/ui`);
  await page.fill('#signin input[name=token]', token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('header .who');
  return page;
}

const sessionCookieOf = async (page: Page): Promise<string> => {
  const c = (await page.context().cookies()).find((x) => x.name === '__Host-writ-session');
  assert.ok(c, 'the session cookie is set');
  return c.value;
};

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  assert.ok(existsSync(join(ROOT, 'dist', 'dashboard', 'index.html')), 'the dashboard bundle is missing: npm run build');
  mkdirSync(IMG, { recursive: true });
  srv = await startServerProcess();
  for (const id of [ORDERS, WEB])
    await ok(['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/ui', '--selector', 'unix:uid:0']);
  const joinToken = JSON.parse(await ok(['token', 'create', '--node-name', 'ui', '-o', 'json'])).token as string;
  agent = await startAgentProcess(srv, { joinToken });
  await applyPolicy(srv, agent.dataDir, POLICY);
  tokens.operator = (await ok(['admin-token', 'create', '--role', 'operator', '--name', 'dashboard-e2e'])).trim();
  tokens.viewer = (await ok(['admin-token', 'create', '--role', 'viewer', '--name', 'auditor'])).trim();
  app = createServer((_req, res) => res.end('{"ok":true}'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  const appPort = (app.address() as AddressInfo).port;
  let ordersPort = 0;
  await onFreePorts(1, ([p]) => ((ordersPort = p!), startProxy(['--spiffe-id', ORDERS, '--inbound', `127.0.0.1:${p}=127.0.0.1:${appPort}`])));
  await onFreePorts(1, ([p]) => ((webPort = p!), startProxy(['--spiffe-id', WEB, '--outbound', `127.0.0.1:${p}=${ORDERS}@127.0.0.1:${ordersPort}`])));
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  for (const p of proxies) p.kill();
  app?.close();
  await agent?.stop();
  await srv?.stop();
  if (!process.env['WRIT_UPDATE_SCREENSHOTS']) cleanup(IMG);
  if (srv) cleanup(srv.dataDir);
  if (agent) cleanup(agent.dataDir);
});

describe('the dashboard in Chromium', () => {
  it('serves /ui under a strict CSP with hashed, long-cached assets', async () => {
    const page = await raw('GET', '/ui', {});
    assert.equal(page.status, 200);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self';/, 'no inline script');
    assert.match(csp, /frame-ancestors 'none'/);
    const html = readFileSync(join(ROOT, 'dist', 'dashboard', 'index.html'), 'utf8');
    const asset = /\/ui\/assets\/(app-[A-Z0-9]{8}\.js)/.exec(html)?.[1];
    assert.ok(asset, 'a hashed script name');
    const js = await raw('GET', `/ui/assets/${asset}`, {});
    assert.equal(js.status, 200);
    assert.match(String(js.headers['cache-control']), /max-age=31536000, immutable/);
    assert.equal((await raw('GET', '/ui/assets/..%2Findex.html', {})).status, 404);
  });

  it('an operator signs in, sees the edge of a real call, explains it, quarantines the caller, and the next call is refused', async () => {
    await waitFor('the policy allowing shop/web', async () => ((await call('/v1/orders/1')) === '200' ? true : undefined));
    const page = await signIn(tokens.operator);
    assert.equal(await page.getAttribute('header .who', 'data-role'), 'operator');
    const cookie = (await page.context().cookies()).find((c) => c.name === '__Host-writ-session')!;
    assert.deepEqual([cookie.httpOnly, cookie.secure, cookie.sameSite, cookie.path], [true, true, 'Strict', '/']);

    // The edge of the real call appears (the graph refreshes from the decision log by itself).
    const row = page.locator(`#edge-list tr[data-from="${WEB}"][data-to="${ORDERS}"]`);
    await row.waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#graph')?.dataset['drawn'] ?? 0) >= 1);
    assert.match((await page.textContent('#graph-stats')) ?? '', /2 identities, 1 edges/);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(IMG, 'dashboard-graph.png') });

    // Its rule, and the explanation from the explain API.
    await row.click();
    assert.match((await page.textContent('#edge .rules')) ?? '', /shop-reads/, 'the rule behind the edge');
    assert.match((await page.textContent('#edge .actions')) ?? '', /GET \/v1\/orders\/1/);
    await page.click('#explain');
    const explanation = await page.waitForSelector('#explanation');
    assert.match((await explanation.textContent()) ?? '', /"decision": "allow"/);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(IMG, 'dashboard-edge.png') });

    // Quarantine the caller from the UI: its next real call is refused.
    await page.click('#quarantine-caller');
    await page.waitForFunction((id) => document.querySelector('.message')?.textContent?.includes(`quarantined ${id}`), WEB);
    // Refused either by the destination's proxy (403) or before any byte reaches it: the caller's
    // proxy no longer gets an SVID to connect with (curl's 000).
    const refused = await waitFor('the quarantined caller refused', async () => {
      const s = await call('/v1/orders/2');
      return s === '403' || s === '000' ? s : undefined;
    });
    assert.ok(refused);
    await page.click('a[data-view=quarantine]');
    await page.waitForSelector('#quarantine-add');
    assert.match((await page.textContent('main table')) ?? '', new RegExp(WEB.replace(/[/.]/g, '\\$&')));
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(IMG, 'dashboard-quarantine.png') });

    // Lift it from the UI: calls pass again.
    await page.click('main table button.lift');
    await page.waitForFunction(() => document.querySelector('.message')?.textContent === 'lifted');
    await waitFor('the lifted caller allowed again', async () => ((await call('/v1/orders/3')) === '200' ? true : undefined));

    // Views of routes this server may not have say so (audit and alerts come with their own helpers' work).
    await page.click('a[data-view=audit]');
    await page.waitForSelector('main .unavailable, main pre');
    await page.click('a[data-view=policies]');
    await page.waitForSelector('#policy-test');
    await page.fill('#policy-test input[name=from]', WEB);
    await page.fill('#policy-test input[name=to]', ORDERS);
    await page.fill('#policy-test input[name=action]', 'DELETE /v1/orders/1');
    await page.click('#policy-test button');
    await page.waitForFunction(() => (document.querySelector('#policy-result')?.textContent ?? '').includes('"decision"'));
    assert.match((await page.textContent('#policy-result')) ?? '', /"decision": "deny"/);

    // Sign out: the cookie replayed is refused, even by a client that kept it.
    const kept = await sessionCookieOf(page);
    assert.equal((await raw('GET', '/v1/whoami', { cookie: `__Host-writ-session=${kept}` })).status, 200, 'live before sign-out');
    await page.click('#signout');
    await page.waitForSelector('#signin');
    const replay = await raw('GET', '/v1/whoami', { cookie: `__Host-writ-session=${kept}` });
    assert.deepEqual([replay.status, replay.code], [401, 'ERR_SESSION_INVALID']);
    assert.deepEqual((page as Page & { cspViolations?: string[] }).cspViolations, [], 'nothing the page does breaks its CSP');
    await page.context().close();
  });

  it('a viewer reads but cannot quarantine: no form, and the server refuses the write with ERR_FORBIDDEN', async () => {
    const page = await signIn(tokens.viewer);
    assert.equal(await page.getAttribute('header .who', 'data-role'), 'viewer');
    await page.click('a[data-view=quarantine]');
    await page.waitForSelector('main .note');
    assert.equal(await page.locator('#quarantine-add').count(), 0);
    // The page's own request, with its CSRF value and Origin, is refused for the role.
    const status = await page.evaluate(async (id) => {
      const s = (await (await fetch('/ui/session')).json()) as { csrf: string };
      const r = await fetch('/v1/quarantine', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-writ-csrf': s.csrf },
        body: JSON.stringify({ spiffeId: id, reason: 'viewer tries' }),
      });
      return [r.status, ((await r.json()) as { code: string }).code];
    }, WEB);
    assert.deepEqual(status, [403, 'ERR_FORBIDDEN']);
    assert.equal(await call('/v1/orders/4'), '200', 'nothing was quarantined');
    await page.context().close();
  });

  it('refuses a forged cookie, and session writes without the CSRF header or from another origin', async () => {
    const forged = await raw('GET', '/v1/whoami', { cookie: `__Host-writ-session=${'A'.repeat(43)}` });
    assert.deepEqual([forged.status, forged.code], [401, 'ERR_SESSION_INVALID']);
    const junk = await raw('GET', '/v1/whoami', { cookie: '__Host-writ-session=../../etc/passwd' });
    assert.deepEqual([junk.status, junk.code], [401, 'ERR_SESSION_INVALID']);

    const page = await signIn(tokens.operator);
    const cookie = `__Host-writ-session=${await sessionCookieOf(page)}`;
    const csrf = await page.evaluate(async () => ((await (await fetch('/ui/session')).json()) as { csrf: string }).csrf);
    const origin = new URL(srv.url).origin;
    const body = { spiffeId: WEB, reason: 'cross-site' };
    const noCsrf = await raw('POST', '/v1/quarantine', { cookie, origin }, body);
    assert.deepEqual([noCsrf.status, noCsrf.code], [403, 'ERR_CSRF_TOKEN']);
    const wrongCsrf = await raw('POST', '/v1/quarantine', { cookie, origin, 'x-writ-csrf': 'x'.repeat(43) }, body);
    assert.deepEqual([wrongCsrf.status, wrongCsrf.code], [403, 'ERR_CSRF_TOKEN']);
    const crossSite = await raw('POST', '/v1/quarantine', { cookie, origin: 'https://evil.example', 'x-writ-csrf': csrf }, body);
    assert.deepEqual([crossSite.status, crossSite.code], [403, 'ERR_CSRF_ORIGIN']);
    const noOrigin = await raw('POST', '/v1/quarantine', { cookie, 'x-writ-csrf': csrf }, body);
    assert.deepEqual([noOrigin.status, noOrigin.code], [403, 'ERR_CSRF_ORIGIN']);
    const signInCrossSite = await raw('POST', '/ui/session', { origin: 'https://evil.example' }, { token: tokens.viewer });
    assert.deepEqual([signInCrossSite.status, signInCrossSite.code], [403, 'ERR_CSRF_ORIGIN']);
    const badToken = await raw('POST', '/ui/session', { origin }, { token: 'writ_not-a-token' });
    assert.deepEqual([badToken.status, badToken.code], [401, 'ERR_UNAUTHENTICATED']);
    assert.equal(await call('/v1/orders/5'), '200', 'none of the refused writes quarantined anything');

    // A real cross-site page in the browser: the SameSite=Strict cookie is not sent with its POST.
    const evil = await page.context().newPage();
    await evil.goto('about:blank');
    const fromElsewhere = await evil.evaluate(async (url) => {
      try {
        const r = await fetch(`${url}/v1/quarantine`, { method: 'POST', credentials: 'include', headers: { 'content-type': 'text/plain' }, body: '{}' });
        return r.status;
      } catch {
        return 0; // the browser refused to read the answer (no CORS): the write still had no session
      }
    }, srv.url);
    assert.ok(fromElsewhere === 0 || fromElsewhere === 401 || fromElsewhere === 415, `cross-site POST got ${fromElsewhere}`);
    assert.equal(await call('/v1/orders/6'), '200');
    await page.context().close();
  });

  it('GET /v1/graph lists each identity and rule once, and edges name them by index', async () => {
    const answer = (await raw('GET', '/v1/graph?window=7d', { authorization: `Bearer ${tokens.viewer}` })).body as {
      nodes: string[];
      rules: string[];
      edges: { from: number; to: number; action: string; allow: number; deny: number; auditWouldDeny: number; rules: number[]; lastSeen: string }[];
    };
    assert.ok(answer.nodes.includes(WEB) && answer.nodes.includes(ORDERS), 'both ends of the real calls are nodes');
    assert.equal(new Set(answer.nodes).size, answer.nodes.length, 'each identity once');
    const edge = answer.edges.find((e) => answer.nodes[e.from] === WEB && answer.nodes[e.to] === ORDERS && e.action.includes('/v1/orders/1'));
    assert.ok(edge, 'the edge of the first call, by index into nodes');
    assert.ok(edge.allow >= 1, 'its allowed call is counted');
    assert.ok(
      edge.rules.some((r) => /shop-reads/.test(answer.rules[r]!)),
      'its rule, by index into rules',
    );
    assert.ok(!Number.isNaN(Date.parse(edge.lastSeen)));
    const text = JSON.stringify(answer.edges);
    assert.ok(!text.includes('spiffe://'), 'no edge repeats a SPIFFE ID');
  });

  it('GET /v1/graph refuses a year-long window and bad filters with 400 codes', async () => {
    const auth = { authorization: `Bearer ${tokens.viewer}` };
    const year = await raw('GET', '/v1/graph?window=365d', auth);
    assert.deepEqual([year.status, year.code], [400, 'ERR_GRAPH_WINDOW_TOO_LONG']);
    assert.equal((await raw('GET', '/v1/graph?window=7d', auth)).status, 200, 'a week is the most');
    assert.deepEqual((await raw('GET', '/v1/graph?window=soon', auth)).code, 'ERR_DURATION_INVALID');
    assert.deepEqual((await raw('GET', '/v1/graph?limit=100001', auth)).code, 'ERR_FIELD_INVALID');
    assert.deepEqual((await raw('GET', '/v1/graph?shape=tables', auth)).code, 'ERR_FIELD_INVALID');
    assert.deepEqual((await raw('GET', '/v1/graph?namespace=Not_A_Namespace', auth)).code, 'ERR_FIELD_INVALID');
    assert.deepEqual((await raw('GET', '/v1/graph?trustDomain=bad%20td', auth)).code, 'ERR_TRUST_DOMAIN_INVALID');
    assert.deepEqual((await raw('GET', `/v1/graph?namespace=${'a'.repeat(300)}`, auth)).code, 'ERR_FIELD_INVALID');
  });

  it('the graph follows a mouse drag and the wheel: a node dragged away, then zoomed about, is clicked at its new place, not its old one', async () => {
    const page = await signIn(tokens.viewer);
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#graph')?.dataset['drawn'] ?? 0) >= 1);
    // Where a node is on screen: the centre of the first patch of the node colour in the first
    // picture of the graph (the one a gesture shows in its gaps).
    const node = await page.evaluate(() => {
      const c = document.querySelector<HTMLCanvasElement>('#graph canvas.graph-overview')!;
      const scale = c.width / c.clientWidth;
      const px = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let first: { x: number; y: number } | undefined;
      let [sx, sy, n] = [0, 0, 0];
      for (let i = 0; i < px.length; i += 4) {
        if (px[i] !== 0x3b || px[i + 1] !== 0x6f || px[i + 2] !== 0xd2) continue;
        const x = (i / 4) % c.width;
        const y = Math.floor(i / 4 / c.width);
        first ??= { x, y };
        if (Math.abs(x - first.x) > 20 || y - first.y > 20) continue;
        [sx, sy, n] = [sx + x, sy + y, n + 1];
      }
      return n ? { x: sx / n / scale, y: sy / n / scale } : undefined;
    });
    assert.ok(node, 'a node is drawn');
    const box = (await page.locator('#graph').boundingBox())!;
    const [dx, dy] = [140, 50];
    // From an empty corner, in steps, as a hand would.
    await page.mouse.move(box.x + 8, box.y + 8);
    await page.mouse.down();
    for (let i = 1; i <= 10; i++) await page.mouse.move(box.x + 8 + (dx * i) / 10, box.y + 8 + (dy * i) / 10);
    await page.mouse.up();
    await page.waitForFunction(() => performance.getEntriesByName('writ:graph-redrawn').length > 0);
    assert.match((await page.textContent('#edge')) ?? '', /Click an edge/, 'the drag was not a click');
    await page.mouse.click(box.x + node.x, box.y + node.y);
    assert.match((await page.textContent('#edge')) ?? '', /Click an edge/, 'nothing is left where the node was');
    // The wheel zooms in about the pointer: the node under it stays under it.
    await page.mouse.move(box.x + node.x + dx, box.y + node.y + dy);
    await page.mouse.wheel(0, -300);
    await page.waitForFunction(() => performance.getEntriesByName('writ:graph-redrawn').length > 1);
    // Two clicks in quick succession are a double click (sigma zooms): let the first one age.
    await page.waitForTimeout(600);
    await page.mouse.click(box.x + node.x + dx, box.y + node.y + dy);
    await page.waitForSelector('#edge dd.from');
    assert.match((await page.textContent('#edge dd.to')) ?? '', /^spiffe:\/\//, 'the node, where it was dropped, opens its edge');
    await page.context().close();
  });
});
