/**
 * The bad-input sweep: every route of the route table (read from the OpenAPI document, which is
 * generated from it), every path parameter, query parameter and body field, with hostile values,
 * on both stores. Nothing a client sends may produce a 5xx; every refusal is a 4xx with a
 * registered code. Agent routes are called with a real agent SVID, so they are swept past
 * authentication too.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { createCsr, toPem } from '@writ/spiffe';
import { HTTP_STATUS } from '../../packages/server/src/errors.ts';
import { startInProcess } from './in-process.ts';

const deep = (n: number): string => `${'['.repeat(n)}1${']'.repeat(n)}`;

/** Raw JSON texts put where a body field's value goes. */
const HOSTILE_JSON = [
  'null',
  'true',
  '1.5',
  '-1',
  '0',
  '1e400',
  '18446744073709551616',
  '""',
  '"a\\u0000b"',
  JSON.stringify('x'.repeat(70_000)),
  JSON.stringify('é💥\u202e\ud800'),
  '"%ZZ"',
  '"spiffe://sweep.test/writ/server"',
  '{}',
  '[]',
  '[1]',
  '{"__proto__": {"admin": true}}',
  deep(10_000),
  '["a\\u0000"]',
];

/** Values for query parameters, put into the URL with encodeURIComponent unless raw. */
const HOSTILE_QUERY: ReadonlyArray<{ v: string; raw?: boolean }> = [
  { v: '%ZZ', raw: true },
  { v: '%', raw: true },
  { v: 'a\u0000b' },
  { v: '1.5' },
  { v: '-1' },
  { v: '1e400' },
  { v: '9'.repeat(400) },
  { v: '' },
  { v: 'é💥\u202e' },
  { v: 'x'.repeat(6000) },
  { v: '[[[[1]]]]' },
  { v: 'spiffe://sweep.test/writ/agent/x' },
];

/** Path parameter values (already percent-encoded). */
const HOSTILE_PARAM = [
  '%ZZ',
  '%',
  '%00',
  'a%00b',
  '%C3%28',
  '%25ZZ',
  '1.5',
  '-1',
  '1e400',
  'x'.repeat(5000),
  '%F0%9F%92%A5',
  'spiffe%3A%2F%2Fsweep.test%2Fwrit%2Fserver',
];

/** Whole bodies. */
const HOSTILE_BODY = ['', 'not json', '[]', '"string"', '1', 'null', deep(100_000), '{"a\\u0000": 1}', `{${'"k":1,'.repeat(10)}"k":2}`];

interface Operation {
  readonly method: string;
  readonly path: string;
  readonly agent: boolean;
  readonly pathParams: string[];
  readonly query: string[];
  readonly fields: string[] | undefined;
  readonly body: boolean;
}

function operationsOf(doc: { paths: Record<string, Record<string, Record<string, unknown>>> }, entryFields: string[]): Operation[] {
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(methods)) {
      const params = (op['parameters'] ?? []) as Array<{ name: string; in: string }>;
      const body = op['requestBody'] as { content: Record<string, { schema: { properties?: Record<string, unknown>; $ref?: string } }> } | undefined;
      const schema = body?.content['application/json']?.schema;
      ops.push({
        method: method.toUpperCase(),
        path,
        agent: op['x-writ-role'] === 'agent',
        pathParams: params.filter((p) => p.in === 'path').map((p) => p.name),
        query: params.filter((p) => p.in === 'query').map((p) => p.name),
        fields: schema?.$ref ? entryFields : schema?.properties ? Object.keys(schema.properties) : undefined,
        body: body !== undefined,
      });
    }
  return ops;
}

interface Case {
  readonly op: Operation;
  readonly path: string;
  readonly body: string | undefined;
  readonly what: string;
}

function casesOf(op: Operation): Case[] {
  const fill = (values: Record<string, string>): string => op.path.replace(/\{([^}]+)\}/g, (_m, name: string) => values[name] ?? 'sweep');
  const benignBody = op.body ? '{}' : undefined;
  const out: Case[] = [];
  for (const p of op.pathParams) for (const v of HOSTILE_PARAM) out.push({ op, path: fill({ [p]: v }), body: benignBody, what: `path ${p}=${v.slice(0, 20)}` });
  for (const q of [...op.query, 'undeclared'])
    for (const { v, raw } of HOSTILE_QUERY)
      out.push({ op, path: `${fill({})}?${q}=${raw ? v : encodeURIComponent(v)}`, body: benignBody, what: `query ${q}=${v.slice(0, 20)}` });
  if (op.body) {
    for (const f of op.fields ?? ['keys', 'spiffeId'])
      for (const v of HOSTILE_JSON) out.push({ op, path: fill({}), body: `{${JSON.stringify(f)}: ${v}}`, what: `field ${f}=${v.slice(0, 20)}` });
    for (const b of HOSTILE_BODY) out.push({ op, path: fill({}), body: b, what: `body ${b.slice(0, 20)}` });
  }
  return out;
}

async function sweep(db: 'sqlite' | 'postgres'): Promise<{ cases: number; refused: number; agentPastAuth: number }> {
  const server = await startInProcess(db, 'sweep.test');
  try {
    // A real agent, so agent routes are swept past their authentication.
    const joinToken = (await server.call('POST', '/v1/join-tokens', { body: { nodeName: 'sweeper' } })).json['token'] as string;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: privateKey, keyType: 'ec-p256' }, publicKey));
    const attested = await server.call('POST', '/v1/agent/attest/join-token', { body: { joinToken, csr } });
    assert.equal(attested.status, 201, attested.text);
    const cert = { key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, cert: attested.json['svid'] as string };

    const doc = (await server.call('GET', '/v1/openapi.json')).json as unknown as Parameters<typeof operationsOf>[0] & {
      components: { schemas: Record<string, { properties: Record<string, unknown> }> };
    };
    const ops: Operation[] = [];
    for (const op of operationsOf(doc, Object.keys(doc.components.schemas['EntryInput']!.properties))) {
      if (!op.body || op.fields) {
        ops.push(op);
        continue;
      }
      // A route that does not declare its fields names them when it refuses an unknown one.
      const probe = await server.call(op.method, op.path.replace(/\{[^}]+\}/g, 'sweep'), { ...(op.agent ? { cert } : {}), body: '{"sweepProbe":1}' });
      const allowed = /allowed: (.*)$/.exec(String(probe.json['message']))?.[1]?.split(', ');
      ops.push({ ...op, fields: allowed });
    }
    assert.ok(ops.length >= 40, `the route table has ${ops.length} operations`);
    const problems: string[] = [];
    let cases = 0;
    let refused = 0;
    let agentPastAuth = 0;
    for (const op of ops) {
      // The long poll would hold each case for its wait; it gets wait=0 beside each hostile value.
      for (const c of casesOf(op)) {
        const path = op.path === '/v1/agent/sync' ? `${c.path}${c.path.includes('?') ? '&' : '?'}wait=0` : c.path;
        const a = await server.call(op.method, path, { ...(op.agent ? { cert } : {}), ...(c.body !== undefined ? { body: c.body } : {}) });
        cases++;
        if (op.agent && a.status !== 401 && a.status !== 403) agentPastAuth++;
        if (a.status >= 500) problems.push(`${op.method} ${op.path} ${c.what}: ${a.status} ${a.text.slice(0, 200)}`);
        else if (a.status >= 400) {
          refused++;
          const code = a.json['code'];
          if (typeof code !== 'string' || HTTP_STATUS[code] !== a.status)
            problems.push(`${op.method} ${op.path} ${c.what}: ${a.status} without a registered code of that status: ${a.text.slice(0, 200)}`);
        }
      }
    }
    // A request head over 16 KiB: an answer, not a dropped connection.
    const long = await server.call('GET', `/v1/entries?spiffeId=${'x'.repeat(20_000)}`);
    assert.equal(long.status, 431, long.text);
    assert.equal(long.json['code'], 'ERR_HEADERS_TOO_LARGE');
    const longish = await server.call('GET', `/v1/entries?spiffeId=${'x'.repeat(10_000)}`);
    assert.equal(longish.status, 414, longish.text);
    assert.equal(longish.json['code'], 'ERR_URI_TOO_LONG');
    assert.deepEqual(problems.slice(0, 30), [], `${problems.length} of ${cases} cases failed`);
    const metrics = (await server.call('GET', '/metrics')).text;
    assert.doesNotMatch(metrics, /writ_http_requests_total\{[^}]*status="5\d\d"/, 'no 5xx counted');
    // The agent routes were swept past their authentication, not only refused at it.
    assert.ok(agentPastAuth > 100, `${agentPastAuth} agent-route cases got past authentication`);
    return { cases, refused, agentPastAuth };
  } finally {
    await server.stop();
  }
}

describe('bad-input sweep over every route', () => {
  for (const db of ['sqlite', 'postgres'] as const)
    it(`on ${db}: no 5xx, every refusal a 4xx with a registered code`, async (t) => {
      const r = await sweep(db);
      t.diagnostic(`${db}: ${r.cases} cases, ${r.refused} refused with a 4xx, the rest accepted; ${r.agentPastAuth} agent-route cases past authentication`);
    });
});
