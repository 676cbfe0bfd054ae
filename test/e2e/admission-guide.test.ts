/**
 * docs/admission.md stays true: its ```sh blocks run as written (see guide.ts).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runGuide } from './guide.ts';

it('the admission guide runs as written: a webhook listener, policies, manifests, a denied review over TLS, the events', async () => {
  // The ports the guide says it uses.
  const g = await runGuide('docs/admission.md', { ports: [7443, 8444], minBlocks: 6, timeoutMs: 180_000 });
  const { code, out, err } = g;
  try {
    assert.equal(code, 0, `the guide failed\nstdout:\n${out}\nstderr:\n${err}\n${g.logs(['writ-admission/server.log'])}`);
    // What the guide says the reader sees.
    assert.match(out, /^revision 1; changed: .*AdmissionPolicy\/prod/m, 'the admission documents were applied');
    assert.match(out, /^2$/m, 'two webhook configurations, each with a caBundle');
    assert.match(out, /^\s+2 \s*failurePolicy: Fail$/m);
    assert.match(out, /^\s+2 \s*timeoutSeconds: 5$/m);
    assert.match(out, /^\s+1 \s*reinvocationPolicy: IfNeeded$/m);
    const answer = JSON.parse(out.split('\n').find((l) => l.startsWith('{"apiVersion":"admission.k8s.io/v1"'))!) as {
      response: { uid: string; allowed: boolean; status: { code: number; reason: string; message: string } };
    };
    assert.equal(answer.response.uid, '5f2b0c1e-7d0a-4c59-9f3e-2d1f00000001');
    assert.equal(answer.response.allowed, false);
    assert.equal(answer.response.status.code, 403);
    assert.equal(answer.response.status.reason, 'Forbidden');
    assert.match(
      answer.response.status.message,
      /^violates PodSecurity "restricted:latest": .*privileged \(container "app" must not set securityContext\.privileged=true\)/,
    );
    assert.match(out, /^TIME\s+VERDICT\s+MODE\s+NAMESPACE\s+OBJECT\s+HOOK\s+CONTROLS/m);
    assert.match(out, /denied\s+enforce\s+prod\s+Pod\/debug\s+validate\s+\S*privileged/);
  } finally {
    await g.finish();
  }
});
