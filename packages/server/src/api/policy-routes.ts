/** Policy revisions (apply, list, get, history, diff, rollback, delete) and authorization checks. */
import { WritError, parseSpiffeId } from '@writ/spiffe';
import { ttlField } from './validate.ts';
import { LEARNING_WINDOW_KIND, PolicyEngine, checkRequestIds, parseAction, parsePolicies, runPolicyTests, type Policy } from '@writ/policy';
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { ADMISSION_KINDS, type AdmissionPolicy, admissionKey, isAdmissionKey, parseAdmission, signatureRequirements } from '@writ/admission';
import { VULN_EXCEPTION_KIND, isVulnExceptionKey, parseVulnExceptions, vulnExceptionKey } from '@writ/vuln';
import { TOKEN_POLICY_KIND, isTokenPolicyKey, parseTokenPolicies, tokenPolicyKey } from '@writ/broker';
import { httpStatusOf } from '../errors.ts';
import { ALERT_RULE_KIND, alertRuleKey, isAlertRuleKey, parseAlertRules } from '../alerts/rules.ts';
import { liftQuarantine, quarantineIdentity } from '../quarantine.ts';
import type { DecisionRecord, PolicyRevision } from '../store/types.ts';
import { DEFAULT_BODY_LIMIT, integerParam, isoIfValid, isoOrNull, object, ok, str, stringParam, withField, type AddRoute } from './http.ts';
import type { ApiContext } from './context.ts';

/** Splits multi-document YAML into its documents' text, by policy name (after validation). */
function sourcesByName(text: string, policies: readonly Policy[]): Record<string, string> {
  const docs = text
    .split(/^---[ \t]*$/m)
    .map((d) => d.replace(/^\s*\n/, '').trimEnd())
    // A PolicyTest's case names (or an admission document's name) must not be taken for a policy's name.
    .filter((d) => d.trim() !== '' && !/^kind:\s*["']?(PolicyTest|AdmissionPolicy|AdmissionException|VulnException|TokenPolicy|AlertRule)\b/m.test(d));
  const out: Record<string, string> = {};
  const windowDoc = (d: string): boolean => new RegExp(`^kind:\\s*["']?${LEARNING_WINDOW_KIND}\\b`, 'm').test(d);
  for (const p of policies) {
    // A LearningWindow's policy is named `LearningWindow/NAME`; its document says NAME.
    const window = p.name.startsWith(`${LEARNING_WINDOW_KIND}/`);
    const bare = window ? p.name.slice(LEARNING_WINDOW_KIND.length + 1) : p.name;
    const doc = docs.find((d) => windowDoc(d) === window && new RegExp(`name:\\s*["']?${bare.replace(/[.]/g, '\\.')}["']?\\s*([,}\\n]|$)`).test(d));
    out[p.name] = `${doc ?? ''}\n`;
  }
  return out;
}

/**
 * Signature key files are read where requests are evaluated (this server): one that cannot be read
 * or is no key does not stop the apply (another replica may have it) but is said now, not at the
 * first admission it fails.
 */
function keyFileWarnings(policies: readonly AdmissionPolicy[]): string[] {
  const out: string[] = [];
  for (const p of policies)
    if (p.images?.signatures.length)
      try {
        signatureRequirements(p.images, (f) => readFileSync(f));
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        out.push(`AdmissionPolicy ${p.name}: ${e.code && e.path ? `key file ${e.path} cannot be read on this server (${e.code})` : e.message.slice(0, 300)}`);
      }
  return out;
}

/** A minimal line diff (longest common subsequence), `-`/`+`/` ` prefixed. */
export function lineDiff(a: string, b: string): string[] {
  const x = a.split('\n');
  const y = b.split('\n');
  if (x.length * y.length > 4_000_000) return [...x.map((l) => `-${l}`), ...y.map((l) => `+${l}`)];
  const dp = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--)
    for (let j = y.length - 1; j >= 0; j--) dp[i]![j] = x[i] === y[j] ? dp[i + 1]![j + 1]! + 1 : Math.max(dp[i + 1]![j]!, dp[i]![j + 1]!);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length && j < y.length) {
    if (x[i] === y[j]) out.push(` ${x[i]}`), i++, j++;
    else if (dp[i + 1]![j]! >= dp[i]![j + 1]!) out.push(`-${x[i++]}`);
    else out.push(`+${y[j++]}`);
  }
  while (i < x.length) out.push(`-${x[i++]}`);
  while (j < y.length) out.push(`+${y[j++]}`);
  return out;
}

const REVISION = integerParam(1, Number.MAX_SAFE_INTEGER);

/** The API form of a logged decision: time as RFC 3339, an unauthenticated caller as null. */
const decisionJson = ({ seq: _seq, ...d }: DecisionRecord) => ({ ...d, at: isoIfValid(d.at), from: d.from || null });

export function policyRoutes(ctx: ApiContext, add: AddRoute): void {
  let cached: { revision: number; engine: PolicyEngine } | undefined;
  const engineFor = async (): Promise<PolicyEngine> => {
    const rev = await ctx.store.getPolicyRevision();
    let engine: PolicyEngine;
    if (!rev) engine = new PolicyEngine(undefined, { breakGlass: ctx.breakGlass });
    else {
      if (cached?.revision !== rev.revision) {
        const policies = Object.values(rev.policies).flatMap((y) => parsePolicies(y, { allowExpired: true }).policies);
        cached = { revision: rev.revision, engine: new PolicyEngine(policies, { revision: rev.revision, breakGlass: ctx.breakGlass }) };
      }
      engine = cached.engine;
    }
    engine.setQuarantine((await ctx.store.listQuarantine(ctx.clock())).map((q) => q.spiffeId));
    return engine;
  };
  /**
   * Edges (caller, callee, action) seen in the last day's decisions (all of them, from the edge
   * aggregate; the 100,000 most used when there are more) whose outcome the proposed set would
   * change. Header conditions cannot be replayed (headers are not logged): they count as absent.
   */
  /** An engine for a policy set (name -> YAML), without quarantine: what the set itself decides. */
  const compile = (set: Readonly<Record<string, string>> | undefined): PolicyEngine =>
    new PolicyEngine(set ? Object.values(set).flatMap((y) => parsePolicies(y, { allowExpired: true }).policies) : undefined, { breakGlass: ctx.breakGlass });
  const changedEdges = async (before: Readonly<Record<string, string>> | undefined, after: Readonly<Record<string, string>>) => {
    const a = compile(before);
    const b = compile(after);
    const out: Array<{ from: string | null; to: string; action: string; seen: number; before: string; after: string; rule: string | null }> = [];
    for (const e of await ctx.store.listDecisionEdges({ since: ctx.clock() - 86_400_000, limit: 100_000 })) {
      let action;
      try {
        action = parseAction(e.action);
      } catch {
        continue;
      }
      const req = { from: e.from || undefined, to: e.to, action };
      const x = a.decide(req);
      const y = b.decide(req);
      if (x.decision !== y.decision)
        out.push({ from: e.from || null, to: e.to, action: e.action, seen: e.seen, before: x.decision, after: y.decision, rule: y.rule?.name ?? null });
    }
    return out.sort((p, q) => q.seen - p.seen).slice(0, 200);
  };
  const summary = (r: PolicyRevision) => ({
    revision: r.revision,
    createdAt: new Date(r.createdAt).toISOString(),
    createdBy: r.createdBy,
    comment: r.comment,
    policies: Object.keys(r.policies).sort(),
  });
  const revParam = (v: unknown, field: string): number => {
    // A number, or its digits (query parameters): anything else (an array, an object) is refused before any conversion.
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new WritError('ERR_FIELD_INVALID', `${field} must be a revision number (1, 2, ...)`, { field });
    return n;
  };
  const mustGet = async (n: number): Promise<PolicyRevision> => {
    const r = await ctx.store.getPolicyRevision(n);
    if (!r) throw new WritError('ERR_NOT_FOUND', `policy revision ${n} does not exist`);
    return r;
  };
  const write = async (current: PolicyRevision | undefined, policies: Record<string, string>, by: string, comment: string) => {
    const rev = await ctx.store.appendPolicyRevision({ createdAt: ctx.clock(), createdBy: by, comment, policies }, current?.revision ?? 0);
    return rev;
  };

  add(
    'POST',
    '/v1/policies',
    'operator',
    'Apply AccessPolicy, AdmissionPolicy, AdmissionException, VulnException, TokenPolicy and AlertRule YAML: validates (with line numbers), runs the PolicyTest cases in it against the proposed set (unless skipTests), then stores a new revision with these documents added or replaced (admission documents and vulnerability exceptions under the names `AdmissionPolicy/NAME`, `AdmissionException/NAME`, `VulnException/NAME`). A VulnException whose expires is past, or further away than the server allows (vulnExceptionMaxAge, default 90 days), is refused. dryRun: validate, test and show what would change.',
    async (req) => {
      const o = object(req.body);
      const yaml = str(o, 'yaml', { required: true, max: 4 * 1024 * 1024 })!;
      const comment = str(o, 'comment', { max: 500 }) ?? '';
      const { policies, others } = parsePolicies(yaml, { file: 'request' });
      const tests = others.filter((x) => x.kind === 'PolicyTest');
      const refused = others.filter(
        (x) =>
          x.kind !== 'PolicyTest' &&
          x.kind !== VULN_EXCEPTION_KIND &&
          x.kind !== TOKEN_POLICY_KIND &&
          x.kind !== ALERT_RULE_KIND &&
          !(ADMISSION_KINDS as readonly string[]).includes(x.kind),
      );
      if (refused.length)
        throw new WritError(
          'ERR_POLICY_INVALID',
          `only kinds AccessPolicy, PolicyTest, AdmissionPolicy, AdmissionException, VulnException, TokenPolicy and AlertRule can be applied (found ${refused.map((x) => `${x.kind} at line ${x.line}`).join(', ')})`,
        );
      // Admission documents are validated with their own line numbers and kept under `Kind/name`.
      const admission = others.some((x) => (ADMISSION_KINDS as readonly string[]).includes(x.kind))
        ? parseAdmission(yaml, { file: 'request', now: ctx.clock() })
        : { policies: [], exceptions: [] };
      const vulnExceptions = others.some((x) => x.kind === VULN_EXCEPTION_KIND)
        ? parseVulnExceptions(yaml, {
            file: 'request',
            now: ctx.clock(),
            ...(ctx.vulnExceptionMaxMs !== undefined ? { maxLifetimeMs: ctx.vulnExceptionMaxMs } : {}),
          })
        : [];
      const admissionDocs = [
        ...admission.policies.map((p) => [admissionKey('AdmissionPolicy', p.name), p.source] as const),
        ...admission.exceptions.map((e) => [admissionKey('AdmissionException', e.name), e.source] as const),
        ...vulnExceptions.map((e) => [vulnExceptionKey(e.name), e.source] as const),
        ...(others.some((x) => x.kind === TOKEN_POLICY_KIND) ? parseTokenPolicies(yaml, { file: 'request' }) : []).map(
          (t) => [tokenPolicyKey(t.name), t.source] as const,
        ),
        ...(others.some((x) => x.kind === ALERT_RULE_KIND) ? parseAlertRules(yaml, { file: 'request' }) : []).map(
          (r) => [alertRuleKey(r.name), r.source] as const,
        ),
      ];
      if (policies.length === 0 && tests.length === 0 && admissionDocs.length === 0)
        throw new WritError(
          'ERR_POLICY_INVALID',
          'no AccessPolicy, AdmissionPolicy, AdmissionException, VulnException, TokenPolicy or AlertRule documents in the request',
        );
      const current = await ctx.store.getPolicyRevision();
      const incoming = { ...sourcesByName(yaml, policies), ...Object.fromEntries(admissionDocs) };
      // Tests alone change nothing (even with replace): they are checked against the current set.
      const next: Record<string, string> =
        o['replace'] === true && (policies.length || admissionDocs.length) ? { ...incoming } : { ...(current?.policies ?? {}), ...incoming };
      const results = o['skipTests'] === true || tests.length === 0 ? [] : runPolicyTests(compile(next), tests);
      const failures = results
        .filter((r) => !r.passed)
        .map((r) => ({ name: r.name, expected: r.expected, got: r.got.decision, reason: r.got.reason, rule: r.got.rule?.name ?? null }));
      if (failures.length)
        return {
          status: httpStatusOf('ERR_POLICY_TEST_FAILED'),
          body: {
            code: 'ERR_POLICY_TEST_FAILED',
            message: `${failures.length} of ${results.length} policy test case(s) failed against the proposed set; nothing was applied (skipTests to override): ${failures
              .slice(0, 5)
              .map((f) => `${f.name}: expected ${f.expected}, got ${f.got}`)
              .join('; ')
              .slice(0, 1000)}`,
            details: { failures },
          },
        };
      const testSummary = { passed: results.length, failed: 0 };
      const names = new Set([...Object.keys(current?.policies ?? {}), ...Object.keys(next)]);
      const changed = [...names].filter((n) => current?.policies[n] !== next[n]).sort();
      // A relative key file means "beside the policy file" to `writ admission check`; the server has no such place.
      for (const p of admission.policies)
        for (const sig of p.images?.signatures ?? [])
          for (const k of sig.keys)
            if ('file' in k && !isAbsolute(k.file))
              throw new WritError(
                'ERR_POLICY_INVALID',
                `request:${p.line}: AdmissionPolicy ${p.name}: key file ${JSON.stringify(k.file.slice(0, 200))} is a relative path; the server reads key files from its own disk: give an absolute path, or the key inline (pem:)`,
              );
      const warnings = keyFileWarnings(admission.policies);
      const result = {
        changed,
        added: changed.filter((n) => !current?.policies[n]),
        removed: changed.filter((n) => !next[n]),
        tests: testSummary,
        ...(warnings.length ? { warnings } : {}),
      };
      if (o['dryRun'] === true)
        return ok({ dryRun: true, revision: current?.revision ?? 0, ...result, changedEdges: await changedEdges(current?.policies, next) });
      if (changed.length === 0) return ok({ dryRun: false, revision: current?.revision ?? 0, ...result });
      const rev = await write(current, next, req.role ?? 'operator', comment);
      return ok({ dryRun: false, revision: rev.revision, ...result }, 201);
    },
    { limit: 5 * DEFAULT_BODY_LIMIT, fields: ['yaml', 'dryRun', 'comment', 'replace', 'skipTests'] },
  );

  add('GET', '/v1/policies', 'viewer', 'The current policy set: every document with its kind (admission documents are named `Kind/name`).', async () => {
    const r = await ctx.store.getPolicyRevision();
    if (!r) return ok({ revision: 0, policies: [] });
    const policies = Object.entries(r.policies)
      .sort()
      .map(([name, y]) => {
        if (isAlertRuleKey(name)) {
          const a = parseAlertRules(y, { file: name })[0]!;
          return {
            name,
            kind: ALERT_RULE_KIND,
            ruleKind: a.kind,
            respond: a.respond ? { quarantine: { ttlSeconds: a.respond.quarantineTtlMs / 1000 } } : null,
          };
        }
        if (isTokenPolicyKey(name)) {
          const t = parseTokenPolicies(y, { file: name })[0]!;
          return { name, kind: TOKEN_POLICY_KIND, clients: t.clients.map((p) => p.source), audiences: t.audiences.map((p) => p.source), scopes: t.scopes };
        }
        if (isVulnExceptionKey(name)) {
          const e = parseVulnExceptions(y, { file: name, stored: true })[0]!;
          return {
            name,
            kind: VULN_EXCEPTION_KIND,
            vulnerability: e.vulnerability,
            scope: { [e.scope.kind]: e.scope.values },
            reason: e.reason,
            owner: e.owner ?? null,
            expires: new Date(e.expires).toISOString(),
            // Kept in the set (a rollback may need it) but of no effect anywhere.
            expired: e.expires <= ctx.clock(),
          };
        }
        if (isAdmissionKey(name)) {
          const a = parseAdmission(y, { file: name, allowExpired: true });
          const p = a.policies[0];
          if (p) return { name, kind: 'AdmissionPolicy', namespaces: p.namespaces, mode: p.mode };
          const e = a.exceptions[0]!;
          return {
            name,
            kind: 'AdmissionException',
            namespaces: e.namespaces,
            controls: e.controls,
            expires: new Date(e.expires).toISOString(),
            // Kept in the set (a rollback may need it) but of no effect anywhere.
            expired: e.expires <= ctx.clock(),
          };
        }
        const p = parsePolicies(y, { allowExpired: true }).policies[0]!;
        if (p.until !== undefined)
          return {
            name,
            kind: LEARNING_WINDOW_KIND,
            to: p.to.source,
            mode: 'learn',
            rules: 0,
            until: new Date(p.until).toISOString(),
            active: p.until > ctx.clock(),
          };
        return { name, kind: 'AccessPolicy', to: p.to.source, mode: p.mode, protocol: p.protocol, rules: p.rules.length };
      });
    return ok({ revision: r.revision, policies });
  });
  add(
    'GET',
    '/v1/policies/history',
    'viewer',
    'Policy revisions, newest first (?limit=, default 50).',
    async (req) => ok({ revisions: (await ctx.store.listPolicyRevisions(Number(req.query.get('limit') ?? 50))).map(summary) }),
    undefined,
    { limit: integerParam(1, 1000) },
  );
  add(
    'GET',
    '/v1/policies/diff',
    'viewer',
    'What changed between two revisions (?from=N&to=M; to defaults to the latest).',
    async (req) => {
      const a = await mustGet(revParam(req.query.get('from'), 'from'));
      const b = req.query.get('to') ? await mustGet(revParam(req.query.get('to'), 'to')) : (await ctx.store.getPolicyRevision())!;
      const names = [...new Set([...Object.keys(a.policies), ...Object.keys(b.policies)])].sort();
      const changes = names
        .filter((n) => a.policies[n] !== b.policies[n])
        .map((n) => ({
          name: n,
          change: !a.policies[n] ? 'added' : !b.policies[n] ? 'removed' : 'changed',
          diff: lineDiff(a.policies[n] ?? '', b.policies[n] ?? '').filter((l, _i, all) => l[0] !== ' ' || all.length < 40),
        }));
      return ok({ from: a.revision, to: b.revision, changes });
    },
    undefined,
    { from: REVISION, to: REVISION },
  );
  add(
    'POST',
    '/v1/policies/rollback',
    'operator',
    'Make an earlier revision current again (as a new revision).',
    async (req) => {
      const o = object(req.body);
      const target = await mustGet(revParam(o['revision'], 'revision'));
      const current = await ctx.store.getPolicyRevision();
      const rev = await write(
        current,
        { ...target.policies },
        req.role ?? 'operator',
        str(o, 'comment', { max: 500 }) ?? `rollback to revision ${target.revision}`,
      );
      return ok({ revision: rev.revision, restored: target.revision }, 201);
    },
    { limit: DEFAULT_BODY_LIMIT, fields: ['revision', 'comment'] },
  );
  add(
    'GET',
    '/v1/policies/{name}',
    'viewer',
    'One policy of the current set, as YAML (?revision=N for an earlier one).',
    async (req) => {
      const r = req.query.get('revision') ? await mustGet(revParam(req.query.get('revision'), 'revision')) : await ctx.store.getPolicyRevision();
      const name = decodeURIComponent(req.params[0]!);
      const y = r?.policies[name];
      if (!r || y === undefined) throw new WritError('ERR_NOT_FOUND', `no policy named ${JSON.stringify(name.slice(0, 100))}`);
      return { status: 200, body: y, contentType: 'application/yaml' };
    },
    undefined,
    { revision: REVISION },
  );
  add('DELETE', '/v1/policies/{name}', 'operator', 'Remove a policy (a new revision without it).', async (req) => {
    const current = await ctx.store.getPolicyRevision();
    const name = decodeURIComponent(req.params[0]!);
    if (!current?.policies[name]) throw new WritError('ERR_NOT_FOUND', `no policy named ${JSON.stringify(name.slice(0, 100))}`);
    const next = { ...current.policies };
    delete next[name];
    const rev = await write(current, next, req.role ?? 'operator', `delete ${name}`);
    return ok({ revision: rev.revision, removed: name });
  });

  // ---------------------------------------------------------------- quarantine
  const quarantineJson = (q: { spiffeId: string; reason: string; createdBy: string; createdAt: number; expiresAt: number | null }) => ({
    spiffeId: q.spiffeId,
    reason: q.reason,
    createdBy: q.createdBy,
    createdAt: new Date(q.createdAt).toISOString(),
    expiresAt: isoOrNull(q.expiresAt),
  });
  add(
    'POST',
    '/v1/quarantine',
    'operator',
    'Quarantine an identity: it can neither call nor be called (break-glass identities excepted), and agents stop serving its SVIDs.',
    async (req) => {
      const o = object(req.body);
      const spiffeId = withField('spiffeId', () => parseSpiffeId(str(o, 'spiffeId', { required: true })!)).uri;
      const reason = str(o, 'reason', { required: true, max: 500 })!;
      const ttl = ttlField(o, 'ttl', 366 * 86_400_000);
      const q = await quarantineIdentity(ctx.store, { spiffeId, reason, createdBy: req.role ?? 'operator', ttlMs: ttl, now: ctx.clock() });
      return ok(quarantineJson(q!), 201);
    },
    { limit: 64 * 1024, fields: ['spiffeId', 'reason', 'ttl'] },
  );
  add('GET', '/v1/quarantine', 'viewer', 'Quarantined identities.', async () =>
    ok({ quarantine: (await ctx.store.listQuarantine(ctx.clock())).map(quarantineJson), breakGlass: ctx.breakGlass }),
  );
  add('DELETE', '/v1/quarantine/{id}', 'operator', 'Lift a quarantine (id: URL-encoded SPIFFE ID).', async (req) => {
    const id = decodeURIComponent(req.params[0]!);
    if (!(await liftQuarantine(ctx.store, id, { now: ctx.clock() }))) throw new WritError('ERR_NOT_FOUND', `${id.slice(0, 200)} is not quarantined`);
    return { status: 204, body: '' };
  });

  add(
    'GET',
    '/v1/decisions',
    'viewer',
    'Decisions reported by agents, newest first (?from=&to=&decision=&since=RFC3339&limit=); with ?after=CURSOR, those that arrived since that cursor, in arrival order. `cursor` in the answer is where to follow on from.',
    async (req) => {
      const q = req.query;
      const since = q.get('since');
      const sinceMs = since === null ? undefined : Date.parse(since);
      if (sinceMs !== undefined && !Number.isFinite(sinceMs)) throw new WritError('ERR_FIELD_INVALID', 'since must be an RFC 3339 time', { field: 'since' });
      const after = q.has('after') ? Number(q.get('after')) : undefined;
      const limit = Number(q.get('limit') ?? 100);
      // Read first: every decision up to it has been committed, so following on from it skips none.
      const upTo = await ctx.store.decisionCursor();
      const rows = await ctx.store.queryDecisions({
        ...(q.get('from') !== null ? { from: q.get('from')! } : {}),
        ...(q.get('to') !== null ? { to: q.get('to')! } : {}),
        ...(q.get('decision') !== null ? { decision: q.get('decision')! } : {}),
        ...(sinceMs !== undefined ? { since: sinceMs } : {}),
        ...(after !== undefined ? { after, upTo } : {}),
        limit,
      });
      // A full page of arrivals continues where it ended; otherwise everything up to `upTo` was seen.
      const cursor = after !== undefined && rows.length === limit ? rows.at(-1)!.seq! : upTo;
      return ok({ decisions: rows.map(decisionJson), cursor: String(cursor) });
    },
    undefined,
    {
      from: stringParam(),
      to: stringParam(),
      decision: stringParam(32),
      since: stringParam(64),
      after: integerParam(0, Number.MAX_SAFE_INTEGER),
      limit: integerParam(1, 10_000),
    },
  );

  add('GET', '/v1/decisions/{id}', 'viewer', 'One logged decision (the id a 403 names).', async (req) => {
    const id = decodeURIComponent(req.params[0]!);
    const d = await ctx.store.getDecision(id);
    if (!d) throw new WritError('ERR_NOT_FOUND', `no decision ${JSON.stringify(id.slice(0, 100))} in the log (pruned, or not reported yet?)`);
    return ok(decisionJson(d));
  });

  add(
    'POST',
    '/v1/authz/check',
    'viewer',
    'Decide and explain one request against the current policy set: {from, to, action, headers?}.',
    async (req) => {
      const o = object(req.body);
      const from = str(o, 'from', { max: 2048 });
      const to = str(o, 'to', { required: true, max: 2048 })!;
      withField(from === undefined ? 'to' : 'from', () => checkRequestIds({ ...(from !== undefined ? { from } : {}), to }));
      const action = withField('action', () => parseAction(str(o, 'action', { required: true, max: 2048 })!));
      const headers = o['headers'] === undefined ? undefined : object(o['headers'], 'headers');
      const engine = await engineFor();
      const x = engine.explain({
        from,
        to,
        action,
        ...(headers ? { headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)])) } : {}),
      });
      return ok({ ...x, request: { from: from ?? null, to, action: o['action'] } });
    },
    { limit: 64 * 1024, fields: ['from', 'to', 'action', 'headers'] },
  );
}
