/** Scanner reports in (`POST /v1/reports`) and the image inventory out (`GET /v1/images`, `/v1/images/{digest}`). */
import { checkImageDigest } from '@writ/protocol';
import { WritError } from '@writ/spiffe';
import { SEVERITIES, parseDocument, type Severity } from '@writ/vuln';
import { MAX_PAGE_SIZE, type ImageDetail, type InventoryImage } from '../store/types.ts';
import { imageAnswerExtras } from '../vuln-answers.ts';
import type { ApiContext } from './context.ts';
import { integerParam, isoOrNull, ok, stringParam, type AddRoute } from './http.ts';
import { ingestVex } from './vex-routes.ts';

/**
 * The default largest report document accepted, in bytes (`--report-limit`): a Trivy report of a
 * big image with every package is some tens of MB. Checked while the body streams in, before
 * anything is parsed.
 */
export const REPORT_BODY_LIMIT = 64 * 1024 * 1024;

const imageJson = (i: InventoryImage) => ({
  digest: i.digest,
  configDigest: i.configDigest,
  indexDigest: i.indexDigest,
  platform: i.platform,
  names: i.names,
  tags: i.tags,
  layers: i.layers,
  annotations: i.annotations,
  labels: i.labels,
  created: isoOrNull(i.created),
  firstSeen: new Date(i.firstSeen).toISOString(),
  lastSeen: new Date(i.lastSeen).toISOString(),
});

/** Findings counted by severity, every severity present (0 when none). */
export function bySeverity(findings: readonly { readonly severity: Severity }[]): Record<Severity, number> {
  const out = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
  for (const f of findings) out[f.severity]++;
  return out;
}

const detailJson = (d: ImageDetail) => ({
  ...imageJson(d.image),
  reports: d.reports.map((r) => ({
    id: r.id,
    scanner: r.scanner,
    scannerVersion: r.scannerVersion,
    format: r.format,
    formatVersion: r.formatVersion,
    scannedAt: isoOrNull(r.scannedAt),
    ingestedAt: new Date(r.ingestedAt).toISOString(),
    packageCount: r.packageCount,
    findingCount: r.findingCount,
    bySeverity: bySeverity(r.findings),
    packages: r.packages,
    findings: r.findings,
  })),
});

export function vulnRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'POST',
    '/v1/reports',
    'operator',
    'Ingests one scanner report: the document itself as the body (Trivy JSON schema 2, Grype JSON, CycloneDX 1.4-1.7, SPDX 2.2/2.3, OpenVEX v0.0.1/v0.2.0), at most --report-limit (default 64 MiB; 413 ERR_BODY_TOO_LARGE as soon as the body passes it). An OpenVEX document is stored as statements under its @id: a higher version replaces the stored one (201), the same one again is 200, an older one (or the same version with other statements) 409 ERR_VEX_VERSION_CONFLICT. Filed under its image manifest digest, with its packages (and their layers) and findings, in one transaction; idempotent per (image, scanner, scan time): 201 when stored, 200 with the first id when already stored. A malformed document is a 400 naming the JSON path.',
    async (req) => {
      const report = parseDocument(req.body);
      // An OpenVEX document is statements about products, not a report of one image.
      if (report.format === 'openvex') return ingestVex(ctx, req.body, report);
      const r = await ctx.store.putReport(report, ctx.clock());
      return ok(
        {
          reportId: r.reportId,
          created: r.created,
          image: r.imageDigest,
          scanner: report.scanner.name,
          format: report.format,
          scannedAt: report.scannedAt ?? null,
          packages: report.packages.length,
          findings: report.findings.length,
          bySeverity: bySeverity(report.findings),
        },
        r.created ? 201 : 200,
      );
    },
    { limit: ctx.reportLimitBytes },
  );

  add(
    'GET',
    '/v1/images/{digest}',
    'viewer',
    'One image of the inventory by manifest digest: names, tags, layers (diff IDs), annotations, labels, the latest report of each scanner with its packages and findings (each with its suppression or null), its base and lineage (parent chain, nearest first, and children), and the workloads running it now.',
    async (req) => {
      const digest = checkImageDigest(decodeURIComponent(req.params[0]!), 'digest');
      const d = await ctx.store.getImage(digest);
      if (!d) throw new WritError('ERR_NOT_FOUND', `no image ${digest} in the inventory`, { field: 'digest' });
      // Issue 13's answers: suppressions on each finding, base and lineage, workloads running it now.
      const extras = await imageAnswerExtras(ctx.store, d, ctx.clock(), ctx.suppressions);
      const body = detailJson(d);
      return ok({
        ...body,
        reports: body.reports.map((r, i) => ({ ...r, findings: r.findings.map((f, j) => ({ ...f, suppressed: extras.suppressed[i]?.[j] ?? null })) })),
        base: extras.base,
        lineage: extras.lineage,
        workloads: extras.workloads,
      });
    },
    undefined,
    {},
  );

  add(
    'GET',
    '/v1/images',
    'viewer',
    'The image inventory ordered by manifest digest (?pageSize=&pageToken=).',
    async (req) => {
      const token = req.query.get('pageToken');
      if (token !== null && !/^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$/.test(token))
        throw new WritError('ERR_PAGE_TOKEN_INVALID', 'pageToken is not one this server issued', { field: 'pageToken' });
      const pageSize = Number(req.query.get('pageSize') ?? 100);
      const page = await ctx.store.listImages(pageSize + 1, token ?? undefined);
      const items = page.slice(0, pageSize);
      return ok({ images: items.map(imageJson), ...(page.length > pageSize ? { nextPageToken: items.at(-1)!.digest } : {}) });
    },
    undefined,
    { pageSize: integerParam(1, MAX_PAGE_SIZE), pageToken: stringParam(200) },
  );
}
