/** The checks every request passes before a handler: whatever a client sends, a WritError with a registered code, or nothing. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { HTTP_STATUS } from '../errors.ts';
import { RouteIndex, checkParams, checkQuery, integerParam, readBody, stringParam, type Route } from './http.ts';
import { routeTable } from './routes.ts';

const refusedWell = (fn: () => unknown): boolean => {
  try {
    fn();
    return true;
  } catch (err) {
    return isWritError(err) && (HTTP_STATUS[err.code] ?? 0) >= 400 && (HTTP_STATUS[err.code] ?? 0) < 500;
  }
};

const route = { name: '/v1/things/{id}/parts/{part}' } as Route;
const SPEC = { limit: integerParam(1, 100), name: stringParam(16), tag: stringParam(8, true) };

it('path parameters: any text either passes or is refused with a 4xx code naming the parameter', () => {
  fc.assert(fc.property(fc.string(), fc.string(), (a, b) => refusedWell(() => checkParams(route, [a, b]))));
  assert.throws(
    () => checkParams(route, ['ok', '%ZZ']),
    (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'part',
  );
  assert.throws(
    () => checkParams(route, ['a%00b', 'ok']),
    (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'id',
  );
});

it('query parameters: integers are whole numbers in range, strings bounded, unknown names refused', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('limit', 'name', 'tag', 'other', '__proto__'), fc.string()), { maxLength: 5 }), (pairs) =>
      refusedWell(() => checkQuery(new URLSearchParams(pairs), SPEC)),
    ),
  );
  for (const v of ['1.5', '-1', '0', '101', '1e2', '', ' 5', '0x10', '9'.repeat(20)])
    assert.throws(
      () => checkQuery(new URLSearchParams({ limit: v }), SPEC),
      (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'limit',
      v,
    );
  checkQuery(new URLSearchParams('limit=100&tag=a&tag=b'), SPEC);
  assert.throws(
    () => checkQuery(new URLSearchParams('name=a&name=b'), SPEC),
    (e) => isWritError(e, 'ERR_FIELD_INVALID'),
  );
  assert.throws(
    () => checkQuery(new URLSearchParams('other=1'), SPEC),
    (e) => isWritError(e, 'ERR_FIELD_UNKNOWN'),
  );
});

const bodyOf = (text: string): IncomingMessage =>
  Object.assign(Readable.from([Buffer.from(text)]), { headers: { 'content-type': 'application/json' } }) as unknown as IncomingMessage;

it('JSON bodies: any JSON value is returned or refused with a 4xx code; NUL and deep nesting are refused naming the field', async () => {
  await fc.assert(
    fc.asyncProperty(fc.jsonValue({ maxDepth: 40 }), async (v) => {
      try {
        await readBody(bodyOf(JSON.stringify(v)), { limit: 1 << 20 });
        return true;
      } catch (err) {
        return isWritError(err) && (HTTP_STATUS[err.code] ?? 0) >= 400 && (HTTP_STATUS[err.code] ?? 0) < 500;
      }
    }),
  );
  await assert.rejects(readBody(bodyOf('{"a": {"b": ["x\\u0000"]}}'), { limit: 1024 }), (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'a.b[0]');
  await assert.rejects(
    readBody(bodyOf(`{"r": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`), { limit: 1 << 20 }),
    (e) => isWritError(e, 'ERR_JSON_INVALID') && e.field === 'r',
  );
  await assert.rejects(readBody(bodyOf('{"x": 1, "y": 2}'), { limit: 1024, fields: ['x'] }), (e) => isWritError(e, 'ERR_FIELD_UNKNOWN') && e.field === 'y');
  assert.deepEqual(await readBody(bodyOf('{"x": [1, {"y": "z"}]}'), { limit: 1024, fields: ['x'] }), { x: [1, { y: 'z' }] });
});

it('the route index finds the same routes, in the same order, as testing every pattern: for route names and any other path', () => {
  const { routes, add } = routeTable();
  const h = () => ({ status: 200, body: {} });
  add('GET', '/v1/things', 'viewer', 'list', h);
  add('POST', '/v1/things', 'operator', 'create', h);
  add('GET', '/v1/things/{id}', 'viewer', 'one', h);
  add('POST', '/v1/things/batch', 'operator', 'many', h);
  add('DELETE', '/v1/things/{id}', 'operator', 'delete', h);
  add('POST', '/v1/token', undefined, 'exchange', h);
  const index = new RouteIndex(routes);
  const scan = (path: string) => routes.filter((r) => r.pattern.test(path));
  const names = (rs: readonly Route[]) => rs.map((r) => `${r.method} ${r.name}`);
  // A path that names a route without parameters may match a route with one too: both, in table order (405 lists both methods).
  assert.deepEqual(names(index.candidates('/v1/things/batch')), ['GET /v1/things/{id}', 'POST /v1/things/batch', 'DELETE /v1/things/{id}']);
  assert.deepEqual(names(index.candidates('/v1/things')), ['GET /v1/things', 'POST /v1/things']);
  assert.deepEqual(index.candidates('/v1/nothing'), []);
  const paths = fc.oneof(
    fc.constantFrom('/v1/things', '/v1/things/batch', '/v1/token', '/v1/things/x', '/v1/token/', '/V1/TOKEN'),
    fc.string().map((s) => `/v1/${s}`),
  );
  fc.assert(fc.property(paths, (p) => assert.deepEqual(names(index.candidates(p)), names(scan(p)))));
  // Routes added to the table afterwards are not in an index built before: it is built once the table is complete.
  add('GET', '/v1/later', undefined, 'later', h);
  assert.deepEqual(index.candidates('/v1/later'), []);
});
