/** Every error code a process can emit is registered by its owner and documented in docs/api.md. */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { ADMISSION_ERROR_CODES } from '@writ/admission';
import { ERROR_CODE_FORMAT, SPIFFE_ERROR_CODES } from '@writ/spiffe';
import { POLICY_ERROR_CODES } from '@writ/policy';
import { OCI_ERROR_CODES } from '@writ/oci';
import { VULN_ERROR_CODES } from '@writ/vuln';
import { BROKER_ERROR_CODES } from '@writ/broker';
import { TRANSPARENCY_ERROR_CODES } from '@writ/transparency';
import { AGENT_ERROR_CODES } from '../../packages/agent/src/errors.ts';
import { PROXY_ERROR_CODES } from '../../packages/proxy/src/errors.ts';
import { HTTP_STATUS, SERVER_ERROR_CODES } from '../../packages/server/src/errors.ts';
import { ROOT, cleanup, startServerProcess, writ } from './helpers.ts';

const REGISTERED = new Set<string>([
  ...SPIFFE_ERROR_CODES,
  ...POLICY_ERROR_CODES,
  ...OCI_ERROR_CODES,
  ...Object.keys(SERVER_ERROR_CODES),
  ...PROXY_ERROR_CODES,
  ...AGENT_ERROR_CODES,
  ...ADMISSION_ERROR_CODES,
  ...VULN_ERROR_CODES,
  ...Object.keys(BROKER_ERROR_CODES),
  ...TRANSPARENCY_ERROR_CODES,
]);

/** Node's own codes that Writ reads from an error it received (never emits). */
const NODE_CODES = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_STREAM_DESTROYED']);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.test.ts'))
    .map((e) => join(e.parentPath, e.name));
}

it("every 'ERR_...' literal in packages/*/src is registered, well formed, and the server has a status for each of its own", () => {
  const unregistered: string[] = [];
  for (const pkg of readdirSync(join(ROOT, 'packages')))
    for (const f of sources(join(ROOT, 'packages', pkg, 'src')))
      for (const m of readFileSync(f, 'utf8').matchAll(/['"`](ERR_[A-Z0-9_]+)['"`]/g))
        if (!REGISTERED.has(m[1]!) && !NODE_CODES.has(m[1]!)) unregistered.push(`${f.slice(ROOT.length)}: ${m[1]}`);
  assert.deepEqual(unregistered, []);
  for (const c of REGISTERED) assert.match(c, ERROR_CODE_FORMAT);
  // What the server answers with: its own codes and its libraries' (SPIFFE, policy) all map to a 4xx/5xx.
  for (const c of [
    ...SPIFFE_ERROR_CODES,
    ...POLICY_ERROR_CODES,
    ...OCI_ERROR_CODES,
    ...Object.keys(BROKER_ERROR_CODES),
    ...TRANSPARENCY_ERROR_CODES,
    ...Object.keys(SERVER_ERROR_CODES),
  ])
    assert.ok((HTTP_STATUS[c] ?? 0) >= 400, `${c} has an HTTP status`);
});

it('docs/api.md lists every registered code', () => {
  const doc = readFileSync(join(ROOT, 'docs/api.md'), 'utf8');
  assert.deepEqual(
    [...REGISTERED].filter((c) => !doc.includes(`\`${c}\``)),
    [],
  );
});

it("the CLI passes on a server's code it has no registry entry for (any well-formed code), and exits 1", async () => {
  const srv = await startServerProcess();
  try {
    const r = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/writ/server',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/a',
      '--selector',
      'unix:uid:0',
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ERR_ENTRY_RESERVED_ID/);
    assert.doesNotMatch(r.stderr, /ERR_REQUEST_FAILED/);
  } finally {
    await srv.stop();
    cleanup(srv.dataDir);
  }
});
