/** The OpenAPI 3.1 document, generated from the route table so it cannot drift from what is served. */
import { HTTP_STATUS } from '../errors.ts';
import type { Route } from './http.ts';

const ENTRY_SCHEMA = {
  type: 'object',
  required: ['spiffeId', 'parentId', 'selectors'],
  additionalProperties: false,
  properties: {
    spiffeId: { type: 'string', description: 'SPIFFE ID issued to matching workloads', example: 'spiffe://example.org/ns/web' },
    parentId: { type: 'string', description: 'SPIFFE ID of the agent (or node) that may serve this entry' },
    selectors: { type: 'array', items: { type: 'string', pattern: '^[a-z0-9_-]+:.+$' }, description: 'type:value selectors; all must match' },
    x509SvidTtl: { oneOf: [{ type: 'integer', minimum: 1 }, { type: 'string' }], description: 'seconds or a duration ("1h"); absent = server default' },
    jwtSvidTtl: { oneOf: [{ type: 'integer', minimum: 1 }, { type: 'string' }] },
    dnsNames: { type: 'array', items: { type: 'string' } },
    federatesWith: { type: 'array', items: { type: 'string' }, description: 'foreign trust domains whose bundles the workload receives' },
    admin: { type: 'boolean' },
    hint: { type: 'string', maxLength: 128 },
    expiresAt: { type: ['string', 'null'], format: 'date-time' },
    requireAdmittedImage: {
      type: 'boolean',
      description: 'SVIDs only for a container whose image digest was admitted under an enforce admission policy (answers carry it only when true)',
    },
  },
};

export function openApiDocument(routes: readonly Route[], serverUrl: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params = [
      ...[...r.name.matchAll(/\{([^}]+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } })),
      ...Object.entries(r.query ?? {}).map(([name, p]) => ({
        name,
        in: 'query',
        required: false,
        schema: p.kind === 'integer' ? { type: 'integer', minimum: p.min, maximum: p.max } : { type: 'string', maxLength: p.max },
        ...(p.kind === 'string' && p.repeat ? { explode: true } : {}),
      })),
    ];
    (paths[r.name] ??= {})[r.method.toLowerCase()] = {
      summary: r.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(r.role ? { security: [{ bearer: [] }], 'x-writ-role': r.role } : { security: [] }),
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: {
                'application/json': {
                  schema:
                    r.name.startsWith('/v1/entries') && r.name !== '/v1/entries/batch'
                      ? { $ref: '#/components/schemas/EntryInput' }
                      : r.body.fields
                        ? { type: 'object', additionalProperties: false, properties: Object.fromEntries(r.body.fields.map((f) => [f, {}])) }
                        : { type: 'object' },
                },
                ...(r.body.protobuf
                  ? { 'application/x-protobuf': { schema: { type: 'string', format: 'binary', description: `protobuf ${r.body.protobuf}` } } }
                  : {}),
              },
            },
          }
        : {}),
      responses: {
        '2XX': { description: 'success' },
        '4XX': {
          description: 'bad request, authentication or authorization failure',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        },
        '503': { description: 'database or CA unavailable; retry', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Writ server API', version: '1' },
    servers: [{ url: serverUrl }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API token; roles viewer < operator < admin' } },
      schemas: {
        EntryInput: ENTRY_SCHEMA,
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: { code: { type: 'string', enum: Object.keys(HTTP_STATUS).sort() }, message: { type: 'string' }, field: { type: 'string' } },
        },
      },
    },
    paths,
  };
}
