/** The webhook's review handling with a fake decider: the AdmissionReview contract, the budget, and the events. */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { isWritError } from '@writ/spiffe';
import type { AdmissionEvent, Store } from '../store/types.ts';
import {
  AdmissionEventWriter,
  AdmittedImageRecorder,
  admissionWebhookRoutes,
  parseAdmissionReview,
  type AdmissionDecider,
  type AdmissionInput,
  type AdmissionOutcome,
} from './admission-routes.ts';
import type { Handler, Request } from './http.ts';

const log = pino({ level: 'silent' });

const review = (request: Record<string, unknown>): Record<string, unknown> => ({
  kind: 'AdmissionReview',
  apiVersion: 'admission.k8s.io/v1',
  request: {
    uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    requestKind: { group: '', version: 'v1', kind: 'Pod' },
    requestResource: { group: '', version: 'v1', resource: 'pods' },
    name: 'web',
    namespace: 'prod',
    operation: 'CREATE',
    userInfo: { username: 'admin', uid: '014fbff9a07c', groups: ['system:authenticated'] },
    object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'prod' }, spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] } },
    oldObject: null,
    dryRun: false,
    options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    ...request,
  },
});

const outcome = (o: Partial<AdmissionOutcome> = {}): AdmissionOutcome => ({
  allowed: true,
  message: '',
  warnings: [],
  auditAnnotations: { decision: 'allow' },
  mode: 'enforce',
  policies: ['prod'],
  controls: [],
  exceptionsUsed: [],
  images: [{ image: 'nginx:1.27', digest: `sha256:${'b'.repeat(64)}`, signedBy: [] }],
  patch: [],
  imagesChecked: true,
  ...o,
});

/** Whether `p` has settled once the review's timers (mocked) have run `ms` ms further. */
async function settledAfter(t: TestContext, p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  void p.then(() => (settled = true));
  t.mock.timers.tick(ms);
  // setImmediate is not mocked: let the chain of awaits behind a fired timer run out.
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  return settled;
}

function harness(decider: AdmissionDecider, budgetMs = 400, apiServerAuthenticated = true) {
  const stored: AdmissionEvent[] = [];
  const admitted: string[][] = [];
  const store = { addAdmissionEvents: async (e: readonly AdmissionEvent[]) => void stored.push(...e) } as unknown as Store;
  const events = new AdmissionEventWriter(store, log);
  const handlers = new Map<string, Handler>();
  admissionWebhookRoutes(
    { decider, budgetMs, events, clock: () => 1_000, admitImages: async (d) => void admitted.push(d), apiServerAuthenticated, log },
    (_m, name, _r, _s, handler) => handlers.set(name, handler),
  );
  const post = async (hook: 'validate' | 'mutate', body: unknown, query = '') => {
    const reply = await handlers.get(`/v1/admission/${hook}`)!({ body, query: new URLSearchParams(query) } as Request);
    await events.close();
    return reply.body as { apiVersion: string; kind: string; response: Record<string, unknown> };
  };
  return { post, stored, admitted };
}

describe('AdmissionReview in and out', () => {
  it('echoes the uid, apiVersion and kind; a deny carries status 403 Forbidden with the message', async () => {
    const h = harness({
      decide: async () => outcome({ allowed: false, message: 'violates PodSecurity "restricted:latest": privileged', controls: ['privileged'] }),
      overBudget: () => outcome(),
    });
    const r = await h.post('validate', review({}));
    assert.equal(r.apiVersion, 'admission.k8s.io/v1');
    assert.equal(r.kind, 'AdmissionReview');
    assert.equal(r.response['uid'], '705ab4f5-6393-11e8-b7cc-42010a800002');
    assert.equal(r.response['allowed'], false);
    assert.deepEqual(r.response['status'], { code: 403, reason: 'Forbidden', message: 'violates PodSecurity "restricted:latest": privileged' });
    assert.equal(r.response['patch'], undefined);
    assert.equal(h.stored.length, 1);
    assert.equal(h.stored[0]!.allowed, false);
    assert.deepEqual(h.stored[0]!.controls, ['privileged']);
    assert.deepEqual(h.admitted, [], 'a denied pod admits no image');
  });

  it('the mutating hook answers a base64 JSONPatch only when there is something to pin, and records only a refusal', async () => {
    const patch = [{ op: 'replace', path: '/spec/containers/0/image', value: `docker.io/library/nginx@sha256:${'b'.repeat(64)}` }];
    const h = harness({ decide: async (_i, _s, hook) => outcome({ patch: hook === 'mutate' ? patch : [] }), overBudget: () => outcome() });
    const r = await h.post('mutate', review({}));
    assert.equal(r.response['patchType'], 'JSONPatch');
    assert.deepEqual(JSON.parse(Buffer.from(r.response['patch'] as string, 'base64').toString()), patch);
    assert.equal(h.stored.length, 0);
    const v = await h.post('validate', review({}));
    assert.equal(v.response['patchType'], undefined, 'the validating hook never patches');
    const refusing = harness({ decide: async () => outcome({ allowed: false, message: 'registry did not answer' }), overBudget: () => outcome() });
    const r2 = await refusing.post('mutate', review({}));
    assert.equal(r2.response['allowed'], false);
    assert.equal(r2.response['patch'], undefined);
    assert.deepEqual(
      refusing.stored.map((e) => [e.hook, e.allowed]),
      [['mutate', false]],
    );
  });

  it("answers before the API server's ?timeout= when it is shorter than the budget", async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const h = harness({ decide: () => new Promise(() => undefined), overBudget: () => outcome({ allowed: false, message: 'over' }) }, 5000);
    const reply = h.post('validate', review({}), 'timeout=1s');
    assert.equal(await settledAfter(t, reply, 400), false, 'most of the time the API server gives is used');
    assert.equal(await settledAfter(t, reply, 599), true, 'answered before the API server gives up at 1 s');
    assert.equal((await reply).response['allowed'], false);
  });

  it('a dry run is recorded as one but admits no image; an enforce admission does', async () => {
    const h = harness({ decide: async () => outcome(), overBudget: () => outcome() });
    await h.post('validate', review({ dryRun: true }));
    assert.equal(h.stored[0]!.dryRun, true);
    assert.deepEqual(h.admitted, []);
    await h.post('validate', review({}));
    assert.deepEqual(h.admitted, [[`sha256:${'b'.repeat(64)}`]]);
  });

  it('admits no image for identity unless the caller is an authenticated API server and an enforce policy checked images', async () => {
    const anyone = harness({ decide: async () => outcome(), overBudget: () => outcome() }, 400, false);
    await anyone.post('validate', review({}));
    assert.equal(anyone.stored.length, 1, 'the verdict is still recorded');
    assert.deepEqual(anyone.admitted, [], 'a review anyone could have forged admits nothing');
    const pssOnly = harness({ decide: async () => outcome({ imagesChecked: false }), overBudget: () => outcome() });
    await pssOnly.post('validate', review({}));
    assert.deepEqual(pssOnly.admitted, [], 'Pod Security alone says nothing of the image');
  });

  it('kinds that hold no pod, DELETE and CONNECT are allowed without asking the decider, and say so', async () => {
    const h = harness({ decide: async () => assert.fail('not asked'), overBudget: () => assert.fail('not asked') });
    const cm = await h.post('validate', review({ kind: { group: '', version: 'v1', kind: 'ConfigMap' }, object: { metadata: { name: 'c' } } }));
    assert.equal(cm.response['allowed'], true);
    assert.equal((cm.response['auditAnnotations'] as Record<string, string>)['decision'], 'skipped');
    assert.match((cm.response['auditAnnotations'] as Record<string, string>)['reason']!, /ConfigMap holds no pod/);
    const del = await h.post('validate', review({ operation: 'DELETE', object: null, oldObject: { metadata: { name: 'web' } } }));
    assert.equal(del.response['allowed'], true);
  });

  it('a decider slower than the budget is answered before the budget ends, with the over-budget verdict', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let aborted = false;
    const h = harness(
      {
        decide: (_i, signal) =>
          new Promise(() => {
            signal.addEventListener('abort', () => (aborted = true));
          }),
        overBudget: (_i, ms) => outcome({ allowed: false, message: `no verdict within the ${ms} ms decision budget` }),
      },
      300,
    );
    const reply = h.post('validate', review({}));
    assert.equal(await settledAfter(t, reply, 299), true, 'answered before the 300 ms budget ends');
    const r = await reply;
    assert.equal(r.response['allowed'], false);
    assert.match((r.response['status'] as { message: string }).message, /300 ms decision budget/);
    assert.ok(aborted, "the decider's work was aborted");
  });

  it('warnings are cut to what the API server keeps', async () => {
    const h = harness({ decide: async () => outcome({ warnings: ['w'.repeat(1000)] }), overBudget: () => outcome() });
    const r = await h.post('validate', review({}));
    const [w] = r.response['warnings'] as string[];
    assert.equal(w!.length, 256);
  });
});

describe('parseAdmissionReview refuses what kube-apiserver never sends, with a clear message', () => {
  const bad: Array<[string, unknown, RegExp]> = [
    ['v1beta1', { ...review({}), apiVersion: 'admission.k8s.io/v1beta1' }, /admissionReviewVersions: \[v1\]/],
    ['no kind', { ...review({}), kind: 'Pod' }, /kind must be "AdmissionReview"/],
    ['no request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, /request must be a JSON object/],
    ['an answer, not a request', { ...review({}), response: { allowed: true } }, /response must be absent/],
    ['no uid', review({ uid: undefined }), /request.uid is required/],
    ['odd uid', review({ uid: 'a b' }), /request.uid must be a UID/],
    ['uid not a string', review({ uid: 7 }), /request.uid must be a string/],
    ['bad operation', review({ operation: 'PATCH' }), /request.operation must be one of/],
    ['CREATE without object', review({ object: null }), /request.object is required for CREATE/],
    ['object an array', review({ object: [] }), /request.object must be a JSON object/],
    ['dryRun a string', review({ dryRun: 'yes' }), /request.dryRun must be true or false/],
    ['namespace too long', review({ namespace: 'n'.repeat(64) }), /request.namespace is longer than 63/],
    ['kind without kind', review({ kind: { group: '', version: 'v1' } }), /request.kind.kind is required/],
  ];
  for (const [what, body, message] of bad)
    it(what, () => {
      assert.throws(
        () => parseAdmissionReview(body),
        (e) => isWritError(e, 'ERR_ADMISSION_REVIEW_INVALID') && message.test(e.message),
      );
    });

  it('a generateName pod is named by its prefix', () => {
    const input: AdmissionInput = parseAdmissionReview(review({ name: '', object: { metadata: { generateName: 'web-' }, spec: {} } }));
    assert.equal(input.name, 'web-');
  });
});

describe('AdmissionEventWriter', () => {
  it('keeps what the store refused and writes it once the store is back, in order, nothing twice', async () => {
    const stored: string[] = [];
    let failures = 2;
    let tries = 0;
    const store = {
      addAdmissionEvents: async (e: readonly AdmissionEvent[]) => {
        tries++;
        if (failures-- > 0) throw new Error('connection refused');
        stored.push(...e.map((x) => x.id));
      },
    } as unknown as Store;
    const w = new AdmissionEventWriter(store, log);
    const ev = (id: string) => ({ id }) as AdmissionEvent;
    w.add(ev('a'));
    w.add(ev('b'));
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      for (const end = Date.now() + 10_000; !ok(); await new Promise((r) => setTimeout(r, 10)))
        if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    };
    await until('a first write', () => tries >= 1);
    assert.deepEqual(stored, [], 'the store is away');
    w.add(ev('c'));
    await until('the store to take the events', () => stored.length > 0);
    assert.deepEqual(stored, ['a', 'b', 'c']);
    assert.equal(tries, 3, 'written again only after each refusal');
    w.add(ev('d'));
    await w.close();
    assert.deepEqual(stored, ['a', 'b', 'c', 'd'], 'close() writes what is queued');
  });
});

describe('AdmittedImageRecorder', () => {
  it('records again, a second later, the digests the store refused', async () => {
    const recorded: string[][] = [];
    let failures = 1;
    const r = new AdmittedImageRecorder(
      async (d) => {
        if (failures-- > 0) throw new Error('the database is away');
        recorded.push(d);
      },
      () => 5,
      log,
    );
    await assert.rejects(r.admit(['sha256:a', 'sha256:b'], 1));
    await new Promise((res) => setTimeout(res, 1300));
    assert.deepEqual(recorded, [['sha256:a', 'sha256:b']]);
    r.close();
  });
});
