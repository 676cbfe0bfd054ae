/**
 * The bad-input sweep: every route of the route table (read from the OpenAPI document, which is
 * generated from it), every path parameter, query parameter and body field, with hostile values,
 * on both stores. Also one level into the arrays of objects in bodies (`entries[i].*`,
 * `decisions[i].*`, ...), protobuf bodies where a route takes them, the form parameters of
 * `POST /v1/token`, and, after all of it, a read of everything the hostile writes stored. Nothing
 * a client sends may produce a 5xx; every refusal is a 4xx with a registered code. Agent routes
 * are called with a real agent SVID, so they are swept past authentication too.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { createCsr, toPem } from '@writ/spiffe';
import { SVID_REQUEST_FIELDS, WORKLOAD_FIELDS } from '@writ/protocol';
import { DECISION_LIMITS } from '@writ/sdk/internal';
import { HTTP_STATUS } from '../../packages/server/src/errors.ts';
import { type Answer, startInProcess } from './in-process.ts';

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
  '9e15',
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

/** The form parameters of `POST /v1/token` (RFC 8693 section 2.1, RFC 7523 client assertions, transaction tokens). */
const TOKEN_PARAMS = [
  'grant_type',
  'resource',
  'audience',
  'scope',
  'requested_token_type',
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'client_id',
  'client_assertion',
  'client_assertion_type',
  'request_context',
  'request_details',
];

/** Form values, as they go into the body (already percent-encoded where it matters). */
const HOSTILE_FORM = [
  '%00',
  'a%00b',
  'x'.repeat(100_000),
  'x'.repeat(17_000),
  '%ZZ',
  '%',
  '%C3%28',
  '%FF',
  '',
  '+',
  '%F0%9F%92%A5%E2%80%AE',
  encodeURIComponent('spiffe://sweep.test/writ/server'),
  encodeURIComponent('{"a":1}'),
  'a=b=c',
  encodeURIComponent(' '.repeat(200)),
];

/** Whole form bodies. */
const HOSTILE_FORM_BODY = ['', '&', '=', '&&&&', '%ZZ=1', `${'a=1&'.repeat(40)}b=2`, '\u0000', 'grant_type', 'x'.repeat(70_000)];

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** A form the token route parses: each case replaces one parameter or repeats it. */
const BENIGN_FORM: Record<string, string> = {
  grant_type: TOKEN_EXCHANGE,
  subject_token: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln',
  subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
  audience: 'spiffe://sweep.test/ns/target',
};

// ------------------------------------------------------------ protobuf, written by hand so it can be wrong

const varint = (n: bigint): Buffer => {
  const out: number[] = [];
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
};
const tag = (field: number, wire: number): Buffer => varint(BigInt(field * 8 + wire));
const bytesField = (field: number, b: Buffer): Buffer => Buffer.concat([tag(field, 2), varint(BigInt(b.length)), b]);
const intField = (field: number, n: bigint): Buffer => Buffer.concat([tag(field, 0), varint(n)]);
const strField = (field: number, v: string): Buffer => bytesField(field, Buffer.from(v));

/** writ.authz.v1.Decision's fields (packages/sdk/proto/writ_authz.proto). */
const DECISION_STRINGS = { id: 1, from: 3, to: 4, action: 5, decision: 6, reason: 7, rule: 8 } as const;
const DECISION_INTS = { at: 2, policyRevision: 9, latencyNs: 10 } as const;

/** A Decision message: a valid one, with `over` replacing (or, with null, leaving out) fields by number. */
function decisionMessage(over: Record<number, Buffer | null> = {}): Buffer {
  const fields: Record<number, Buffer> = {
    1: strField(1, `sweep-${Math.random().toString(36).slice(2)}`),
    2: intField(2, BigInt(Date.now())),
    4: strField(4, 'spiffe://sweep.test/ns/proto'),
    5: strField(5, 'GET /'),
    6: strField(6, 'allow'),
    7: strField(7, 'ALLOW_RULE'),
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete fields[Number(k)];
    else fields[Number(k)] = v;
  }
  return Buffer.concat(Object.values(fields));
}
const report = (...decisions: Buffer[]): Buffer => Buffer.concat(decisions.map((d) => bytesField(1, d)));

/** Hostile protobuf bodies for a route taking writ.authz.v1.ReportRequest. */
function hostileReports(): Array<{ body: Buffer; what: string }> {
  const out: Array<{ body: Buffer; what: string }> = [];
  const add = (what: string, body: Buffer): void => void out.push({ body, what });
  const huge = [0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 9_000_000_000_000_000n, BigInt(Date.now() + 2 * 86_400_000)];
  // The message itself.
  add('empty', Buffer.alloc(0));
  add('one zero byte', Buffer.from([0]));
  add('truncated varint', Buffer.from([0x80]));
  add('length past the end', Buffer.from([0x0a, 0x05, 0x01]));
  add('field number 0', Buffer.from([0x02, 0x00]));
  add('11-byte varint key', Buffer.from([...Array(10).fill(0xff), 0x01]));
  add('largest field number', Buffer.concat([tag(2 ** 29 - 1, 0), varint(1n)]));
  add('random bytes', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) % 251)));
  add('JSON sent as protobuf', Buffer.from('{"decisions": []}'));
  for (const wire of [0, 1, 3, 4, 5, 6, 7]) add(`decisions with wire type ${wire}`, Buffer.concat([tag(1, wire), Buffer.alloc(8, 1)]));
  for (const n of huge) add(`dropped=${n}`, Buffer.concat([report(decisionMessage()), intField(2, n)]));
  add('dropped as bytes', Buffer.concat([report(decisionMessage()), strField(2, '12')]));
  add('11-byte varint dropped', Buffer.concat([tag(2, 0), Buffer.from([...Array(10).fill(0xff), 0x01])]));
  // One decision inside a well-formed report.
  for (const [name, f] of Object.entries(DECISION_STRINGS)) {
    const limit = DECISION_LIMITS[name as keyof typeof DECISION_LIMITS];
    for (const [what, v] of [
      ['NUL', Buffer.from('a\u0000b')],
      ['only NUL', Buffer.from([0])],
      ['over its limit', Buffer.alloc(limit + 1, 0x61)],
      ['at its limit', Buffer.alloc(limit, 0x61)],
      ['invalid UTF-8', Buffer.from([0xc3, 0x28, 0xff, 0xfe])],
      ['an emoji and RTL override', Buffer.from('é💥\u202e')],
      ['empty', Buffer.alloc(0)],
    ] as const)
      add(`decision.${name} ${what}`, report(decisionMessage(), decisionMessage({ [f]: bytesField(f, v) })));
    add(`decision.${name} as a varint`, report(decisionMessage({ [f]: intField(f, 7n) })));
    add(`decision.${name} as fixed64`, report(decisionMessage({ [f]: Buffer.concat([tag(f, 1), Buffer.alloc(8)]) })));
    add(`decision.${name} twice`, report(decisionMessage({ [f]: Buffer.concat([strField(f, 'a'), strField(f, 'b')]) })));
  }
  for (const [name, f] of Object.entries(DECISION_INTS)) {
    for (const n of huge) add(`decision.${name}=${n}`, report(decisionMessage(), decisionMessage({ [f]: intField(f, n) })));
    add(`decision.${name} as bytes`, report(decisionMessage({ [f]: strField(f, '123') })));
    add(`decision.${name} as fixed32`, report(decisionMessage({ [f]: Buffer.concat([tag(f, 5), Buffer.alloc(4, 0xff)]) })));
    add(`decision.${name} missing`, report(decisionMessage({ [f]: null })));
  }
  add('decision: no fields', report(Buffer.alloc(0)));
  add('decision: truncated inside', report(Buffer.from([0x0a, 0x09, 0x61])));
  add('decision: a report nested in it', report(report(decisionMessage())));
  const dup = decisionMessage({ 1: strField(1, 'sweep-duplicate-id') });
  add('the same decision id twice', report(dup, dup));
  add('2,000 decisions', report(...Array.from({ length: 2000 }, () => decisionMessage())));
  add('over the body limit', Buffer.alloc(8 * 1024 * 1024 + 1, 0x08));
  return out;
}

interface Operation {
  readonly method: string;
  readonly path: string;
  readonly agent: boolean;
  readonly pathParams: string[];
  readonly query: string[];
  readonly fields: string[] | undefined;
  readonly body: boolean;
  /** The body also goes as application/x-protobuf. */
  readonly protobuf: boolean;
}

/** An array of objects in a request body: the fields of its items, and a valid item to vary one field of. */
interface ItemSpec {
  readonly fields: readonly string[];
  readonly base: Record<string, unknown>;
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
        protobuf: body?.content['application/x-protobuf'] !== undefined,
      });
    }
  return ops;
}

interface Case {
  readonly op: Operation;
  readonly path: string;
  readonly body: string | Buffer | undefined;
  readonly what: string;
  /** Default application/json. */
  readonly contentType?: string;
  /** Sent without the agent's certificate (and without a token). */
  readonly anonymous?: boolean;
  readonly kind: 'top' | 'item' | 'protobuf' | 'form';
}

function casesOf(op: Operation, items: ReadonlyMap<string, ItemSpec>): Case[] {
  const fill = (values: Record<string, string>): string => op.path.replace(/\{([^}]+)\}/g, (_m, name: string) => values[name] ?? 'sweep');
  const benignBody = op.body ? '{}' : undefined;
  const out: Case[] = [];
  const kind = 'top';
  for (const p of op.pathParams)
    for (const v of HOSTILE_PARAM) out.push({ op, kind, path: fill({ [p]: v }), body: benignBody, what: `path ${p}=${v.slice(0, 20)}` });
  for (const q of [...op.query, 'undeclared'])
    for (const { v, raw } of HOSTILE_QUERY)
      out.push({ op, kind, path: `${fill({})}?${q}=${raw ? v : encodeURIComponent(v)}`, body: benignBody, what: `query ${q}=${v.slice(0, 20)}` });
  if (op.body) {
    for (const f of op.fields ?? ['keys', 'spiffeId'])
      for (const v of HOSTILE_JSON) out.push({ op, kind, path: fill({}), body: `{${JSON.stringify(f)}: ${v}}`, what: `field ${f}=${v.slice(0, 20)}` });
    for (const b of HOSTILE_BODY) out.push({ op, kind, path: fill({}), body: b, what: `body ${b.slice(0, 20)}` });
    // One level down: each field of an item, alone and in a valid item after a valid one.
    for (const f of op.fields ?? []) {
      const spec = items.get(`${op.method} ${op.path} ${f}`);
      if (!spec) continue;
      const base = JSON.stringify(spec.base);
      for (const k of spec.fields)
        for (const v of HOSTILE_JSON) {
          const varied = `{${[
            ...Object.entries(spec.base)
              .filter(([x]) => x !== k)
              .map(([x, y]) => `${JSON.stringify(x)}: ${JSON.stringify(y)}`),
            `${JSON.stringify(k)}: ${v}`,
          ].join(', ')}}`;
          out.push({
            op,
            kind: 'item',
            path: fill({}),
            body: `{${JSON.stringify(f)}: [{${JSON.stringify(k)}: ${v}}]}`,
            what: `${f}[0].${k}=${v.slice(0, 20)}`,
          });
          out.push({
            op,
            kind: 'item',
            path: fill({}),
            body: `{${JSON.stringify(f)}: [${base}, ${varied}]}`,
            what: `${f}[1].${k}=${v.slice(0, 20)} (in a valid item)`,
          });
        }
    }
  }
  if (op.protobuf)
    for (const { body, what } of hostileReports())
      out.push({ op, kind: 'protobuf', path: fill({}), body, contentType: 'application/x-protobuf', what: `protobuf ${what}` });
  return out;
}

/** `POST /v1/token`: every parameter hostile, repeated, or missing; whole bodies; other content types; with and without a client certificate. */
function formCases(op: Operation): Case[] {
  const out: Case[] = [];
  const form = (o: Record<string, string>, extra = ''): string =>
    Object.entries(o)
      .map(([k, v]) => `${k}=${v.includes('%') || v === '' ? v : encodeURIComponent(v)}`)
      .join('&') + extra;
  const bodies: Array<[string, string]> = [];
  for (const p of TOKEN_PARAMS) {
    for (const v of HOSTILE_FORM) bodies.push([`${p}=${v.slice(0, 20)}`, `${form({ ...BENIGN_FORM, [p]: '' }).replace(`${p}=`, `${p}=${v}`)}`]);
    bodies.push([`${p} repeated`, form(BENIGN_FORM, `&${p}=${encodeURIComponent(BENIGN_FORM[p] ?? 'x')}&${p}=y`)]);
    bodies.push([`${p} missing`, form(Object.fromEntries(Object.entries(BENIGN_FORM).filter(([k]) => k !== p)))]);
    bodies.push([`${p} name hostile`, form(BENIGN_FORM, `&${p}%00=x`)]);
  }
  for (const b of HOSTILE_FORM_BODY) bodies.push([`body ${b.slice(0, 20)}`, b]);
  for (const anonymous of [false, true]) {
    for (const [what, body] of bodies)
      out.push({
        op,
        kind: 'form',
        path: op.path,
        body,
        contentType: 'application/x-www-form-urlencoded',
        anonymous,
        what: `form ${what}${anonymous ? '' : ' (agent SVID)'}`,
      });
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded; charset=latin1', 'multipart/form-data; boundary=x'])
      out.push({ op, kind: 'form', path: op.path, body: form(BENIGN_FORM), contentType: type, anonymous, what: `form as ${type}` });
  }
  return out;
}

/** Sweep size floors: the sweep must not silently shrink (a route table read wrongly, a case list emptied). */
const FLOORS = { cases: 5500, item: 1250, protobuf: 120, form: 480, reads: 100 } as const;

interface SweepResult {
  cases: number;
  refused: number;
  agentPastAuth: number;
  byKind: Record<Case['kind'] | 'reads', number>;
}

async function sweep(db: 'sqlite' | 'postgres'): Promise<SweepResult> {
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
    const entryFields = Object.keys(doc.components.schemas['EntryInput']!.properties);
    const ops: Operation[] = [];
    for (const op of operationsOf(doc, entryFields)) {
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

    // The arrays of objects in request bodies. A route that refuses unknown item fields names them
    // (a probe finds any array the table below misses); the others are listed from their contracts.
    const items = new Map<string, ItemSpec>([
      [
        'POST /v1/entries/batch entries',
        { fields: entryFields, base: { spiffeId: 'spiffe://sweep.test/ns/item', parentId: 'spiffe://sweep.test/writ/agent/x', selectors: ['unix:uid:0'] } },
      ],
      ['POST /v1/agent/svids requests', { fields: SVID_REQUEST_FIELDS, base: { entryId: 'sweep', csr } }],
      [
        'POST /v1/agent/decisions decisions',
        {
          fields: ['id', 'at', 'from', 'to', 'action', 'decision', 'reason', 'policyRevision', 'rule', 'latencyUs'],
          base: { to: 'spiffe://sweep.test/ns/b', decision: 'allow', reason: 'ALLOW_RULE', action: 'GET /' },
        },
      ],
      ['POST /v1/agent/workloads workloads', { fields: WORKLOAD_FIELDS, base: { key: 'sweep-container', spiffeIds: ['spiffe://sweep.test/ns/w'] } }],
    ]);
    for (const op of ops)
      for (const f of op.fields ?? []) {
        const key = `${op.method} ${op.path} ${f}`;
        if (items.has(key)) continue;
        const probe = await server.call(op.method, op.path.replace(/\{[^}]+\}/g, 'sweep'), {
          ...(op.agent ? { cert } : {}),
          body: { [f]: [{ sweepProbe: 1 }] },
        });
        const refusal = `unknown field "${f}[0].sweepProbe"; allowed: `;
        const message = String(probe.json['message']);
        const allowed = message.startsWith(refusal) ? message.slice(refusal.length) : undefined;
        if (allowed) items.set(key, { fields: allowed.split(', '), base: {} });
      }
    const token = ops.find((o) => o.method === 'POST' && o.path === '/v1/token');
    assert.ok(token, 'the token route is in the route table');

    const problems: string[] = [];
    const byKind: SweepResult['byKind'] = { top: 0, item: 0, protobuf: 0, form: 0, reads: 0 };
    let cases = 0;
    let refused = 0;
    let agentPastAuth = 0;
    const check = (what: string, a: Answer): void => {
      if (a.status >= 500) problems.push(`${what}: ${a.status} ${a.text.slice(0, 200)}`);
      else if (a.status >= 400) {
        refused++;
        const code = a.json['code'];
        if (typeof code !== 'string' || HTTP_STATUS[code] !== a.status)
          problems.push(`${what}: ${a.status} without a registered code of that status: ${a.text.slice(0, 200)}`);
      }
    };
    for (const op of ops) {
      // The long poll would hold each case for its wait; it gets wait=0 beside each hostile value.
      for (const c of [...casesOf(op, items), ...(op === token ? formCases(op) : [])]) {
        const path = op.path === '/v1/agent/sync' ? `${c.path}${c.path.includes('?') ? '&' : '?'}wait=0` : c.path;
        const who = c.anonymous ? { token: null } : op.agent || c.kind === 'form' ? { cert } : {};
        const a = await server.call(op.method, path, {
          ...who,
          ...(c.body !== undefined ? { body: c.body } : {}),
          ...(c.contentType ? { contentType: c.contentType } : {}),
        });
        cases++;
        byKind[c.kind]++;
        if (op.agent && a.status !== 401 && a.status !== 403) agentPastAuth++;
        check(`${op.method} ${op.path} ${c.what}`, a);
      }
    }
    // Whatever the hostile writes stored, every read answers: each GET route as it is, and each
    // stored decision and entry one by one.
    const read = async (path: string): Promise<Answer> => {
      const a = await server.call('GET', path, path.startsWith('/v1/agent/') ? { cert } : {});
      cases++;
      byKind.reads++;
      check(`GET ${path} after the hostile writes`, a);
      return a;
    };
    const stored = ((await read('/v1/decisions?limit=10000')).json['decisions'] ?? []) as Array<{ id: string }>;
    if (stored.length < 50) problems.push(`the hostile writes stored ${stored.length} decisions to read back, fewer than 50`);
    for (const d of stored.slice(0, 200)) await read(`/v1/decisions/${encodeURIComponent(d.id)}`);
    const entries = ((await read('/v1/entries?pageSize=1000')).json['entries'] ?? []) as Array<{ id: string }>;
    for (const e of entries.slice(0, 100)) await read(`/v1/entries/${encodeURIComponent(e.id)}`);
    for (const o of ops) if (o.method === 'GET' && o.pathParams.length === 0 && o.path !== '/v1/agent/sync') await read(o.path);
    await read('/v1/agent/sync?since=0&wait=0');
    await read('/v1/workloads?running=false&limit=50000');
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
    return { cases, refused, agentPastAuth, byKind };
  } finally {
    await server.stop();
  }
}

describe('bad-input sweep over every route', () => {
  for (const db of ['sqlite', 'postgres'] as const)
    it(`on ${db}: no 5xx, every refusal a 4xx with a registered code`, async (t) => {
      const r = await sweep(db);
      const kinds = Object.entries(r.byKind)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ');
      t.diagnostic(
        `${db}: ${r.cases} cases (${kinds}), ${r.refused} refused with a 4xx, the rest accepted; ${r.agentPastAuth} agent-route cases past authentication`,
      );
      assert.ok(r.cases >= FLOORS.cases, `${r.cases} cases, fewer than ${FLOORS.cases}`);
      for (const k of ['item', 'protobuf', 'form', 'reads'] as const) assert.ok(r.byKind[k] >= FLOORS[k], `${r.byKind[k]} ${k} cases, fewer than ${FLOORS[k]}`);
    });
});
