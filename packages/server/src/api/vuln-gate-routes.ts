/**
 * Containment and vulnerability events (issue 13, section 6):
 * `POST /v1/vulnerabilities/{id}/quarantine` and `GET /v1/vulnerabilities/events`.
 */
import { WritError } from '@writ/spiffe';
import { SEVERITIES, type Severity, normalizeVulnId } from '@writ/vuln';
import { contain, containmentQuarantines, type ContainedIdentity } from '../vuln-containment.ts';
import { vulnEventJson } from '../vuln-events.ts';
import type { ApiContext } from './context.ts';
import { integerParam, isoOrNull, object, ok, str, stringParam, strList, type AddRoute } from './http.ts';
import { ttlField } from './validate.ts';

const identityJson = (c: ContainedIdentity) => ({ spiffeId: c.spiffeId, workloads: c.workloads });

export function vulnGateRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'POST',
    '/v1/vulnerabilities/{id}/quarantine',
    'operator',
    'Containment: quarantines, in one write, every identity (SPIFFE ID) running an image whose latest report carries the vulnerability now (at or above minSeverity, default any; suppressed findings left out). Body {reason, ttl?, minSeverity?, dryRun?}. The quarantine reason starts with "[ID] ". Identities quarantined already keep their entry (alreadyQuarantined).',
    async (req) => {
      const vulnId = normalizeVulnId(decodeURIComponent(req.params[0]!));
      const o = object(req.body);
      const reason = str(o, 'reason', { required: true, max: 400 })!;
      const ttlMs = ttlField(o, 'ttl', 366 * 86_400_000);
      const min = str(o, 'minSeverity', { max: 20 }) ?? 'unknown';
      if (!(SEVERITIES as readonly string[]).includes(min))
        throw new WritError('ERR_FIELD_INVALID', `minSeverity must be one of ${SEVERITIES.join(', ')}`, { field: 'minSeverity' });
      const dryRun = o['dryRun'];
      if (dryRun !== undefined && typeof dryRun !== 'boolean') throw new WritError('ERR_FIELD_INVALID', 'dryRun must be true or false', { field: 'dryRun' });
      const c = await contain(
        ctx.store,
        {
          vulnId,
          reason,
          ...(ttlMs !== undefined ? { ttlMs } : {}),
          minSeverity: min as Severity,
          createdBy: req.role ?? 'operator',
          now: ctx.clock(),
          dryRun: dryRun === true,
        },
        ctx.suppressions,
      );
      return ok(
        {
          vulnerability: c.vulnerability,
          dryRun: dryRun === true,
          reason: c.reason,
          expiresAt: isoOrNull(c.expiresAt),
          images: c.images,
          quarantined: c.quarantined.map(identityJson),
          alreadyQuarantined: c.alreadyQuarantined.map(identityJson),
        },
        dryRun !== true && c.quarantined.length ? 201 : 200,
      );
    },
    { limit: 64 * 1024, fields: ['reason', 'ttl', 'minSeverity', 'dryRun'] },
  );

  add(
    'POST',
    '/v1/vulnerabilities/{id}/release',
    'operator',
    'Lifts the quarantines containment of the vulnerability wrote (reason "[ID] ..."), all of them or those of `spiffeIds`; other quarantines are left alone. Once the fixed digests are deployed: their workloads get SVIDs again and `rollout` shows whether any instance still runs an affected digest. Body {spiffeIds?, dryRun?}.',
    async (req) => {
      const vulnId = normalizeVulnId(decodeURIComponent(req.params[0]!));
      const o = object(req.body ?? {});
      const dryRun = o['dryRun'];
      if (dryRun !== undefined && typeof dryRun !== 'boolean') throw new WritError('ERR_FIELD_INVALID', 'dryRun must be true or false', { field: 'dryRun' });
      const only = strList(o, 'spiffeIds', { max: 10_000, itemMax: 2048 });
      const now = ctx.clock();
      const mine = [...(await containmentQuarantines(ctx.store, vulnId, now)).keys()].filter((id) => !only || only.includes(id));
      const released: string[] = [];
      if (dryRun !== true) for (const id of mine) if (await ctx.store.removeQuarantine(id)) released.push(id);
      return ok({ vulnerability: vulnId, dryRun: dryRun === true, released: dryRun === true ? mine : released });
    },
    { limit: 1024 * 1024, fields: ['spiffeIds', 'dryRun'] },
  );

  add(
    'GET',
    '/v1/vulnerabilities/events',
    'viewer',
    'Vulnerability events, newest first (?since=RFC3339&limit=): a running workload newly affected at or above the configured severity, by a new report, a newly running workload or an exception that ended; with ?after=CURSOR, those stored since that cursor, in arrival order. `cursor` in the answer is where to follow on from.',
    async (req) => {
      const q = req.query;
      const since = q.get('since');
      const sinceMs = since === null ? undefined : Date.parse(since);
      if (sinceMs !== undefined && !Number.isFinite(sinceMs)) throw new WritError('ERR_FIELD_INVALID', 'since must be an RFC 3339 time', { field: 'since' });
      const after = q.has('after') ? Number(q.get('after')) : undefined;
      const limit = Number(q.get('limit') ?? 100);
      // Read first: every event up to it has been committed, so following on from it skips none.
      const upTo = await ctx.store.vulnEventCursor();
      const rows = await ctx.store.queryVulnEvents({
        ...(sinceMs !== undefined ? { since: sinceMs } : {}),
        ...(after !== undefined ? { after, upTo } : {}),
        limit,
      });
      const cursor = after !== undefined && rows.length === limit ? rows.at(-1)!.seq! : upTo;
      return ok({ events: rows.map(vulnEventJson), cursor: String(cursor) });
    },
    undefined,
    { since: stringParam(64), after: integerParam(0, Number.MAX_SAFE_INTEGER), limit: integerParam(1, 10_000) },
  );
}
