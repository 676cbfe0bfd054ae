/**
 * OpenVEX in and out (issue 13, section 5): documents ingested through `POST /v1/reports` (see
 * vuln-routes.ts), the stored statements (`GET /v1/vex`), a document removed
 * (`DELETE /v1/vex/{id}`), and an OpenVEX document of the stored statements and the active
 * VulnExceptions (`GET /v1/vex/export`).
 */
import { WritError } from '@writ/spiffe';
import { type Report, type VexProduct, type VexStatement, type VulnException, normalizeVulnId, openVexDocument, repositoryOf, vexDocumentOf } from '@writ/vuln';
import type { StoredVexStatement } from '../store/types.ts';
import { VERSION } from '../version.ts';
import type { ApiContext } from './context.ts';
import { isoOrNull, ok, stringParam, withField, type AddRoute, type Reply } from './http.ts';

/** `POST /v1/reports` with an OpenVEX body: its statements stored as one document (201 new or replaced, 200 unchanged). */
export async function ingestVex(ctx: ApiContext, body: unknown, report: Report): Promise<Reply> {
  const doc = vexDocumentOf(body, report);
  const r = await ctx.store.putVexDocument(doc, ctx.clock());
  return ok(
    {
      format: 'openvex',
      document: doc.id,
      author: doc.author,
      version: doc.version,
      created: r.created,
      replaced: r.replaced,
      statements: r.statements,
      byStatus: Object.fromEntries(
        ['not_affected', 'fixed', 'affected', 'under_investigation'].map((s) => [s, doc.statements.filter((x) => x.status === s).length]),
      ),
    },
    r.created || r.replaced !== null ? 201 : 200,
  );
}

const vulnParam = (v: string | null): string | undefined => (v === null ? undefined : withField('vulnerability', () => normalizeVulnId(v)));

const statementJson = (s: StoredVexStatement) => ({
  document: s.document.id,
  author: s.document.author,
  documentVersion: s.document.version,
  vulnerability: s.vulnerability,
  aliases: s.aliases,
  status: s.status,
  justification: s.justification ?? null,
  impactStatement: s.impactStatement ?? null,
  actionStatement: s.actionStatement ?? null,
  timestamp: s.timestamp ?? null,
  products: s.products,
});

/** `pkg:oci/NAME[@DIGEST]?repository_url=REGISTRY/PATH` of a repository (`registry.example.com/team/web`). */
function ociPurl(repository: string, digest?: string): string {
  const slash = repository.lastIndexOf('/');
  return `pkg:oci/${encodeURIComponent(repository.slice(slash + 1))}${digest === undefined ? '' : `@${encodeURIComponent(digest)}`}?repository_url=${encodeURIComponent(repository.slice(0, slash))}`;
}

/**
 * The products an exception's scope stands for in OpenVEX: a digest as `pkg:oci/NAME@DIGEST` for
 * each repository the inventory knows it under (what scanners match images by), or as itself
 * when it knows none; a repository as `pkg:oci/NAME?repository_url=...` (no version: every image
 * of it); a package purl as the package. A package name or a repository prefix has no OpenVEX
 * spelling: it becomes a `urn:writ:` IRI that says what it covered and that no tool matches.
 */
export function exceptionProducts(e: VulnException, repositoriesOf: (digest: string) => readonly string[] = () => []): VexProduct[] {
  return e.scope.values.flatMap((v): VexProduct[] => {
    if (e.scope.kind === 'digest') {
      const repos = repositoriesOf(v);
      if (repos.length === 0) return [{ id: v, digest: v, subcomponents: [] }];
      return repos.map((r) => ({ id: ociPurl(r, v), purl: ociPurl(r, v), digest: v, subcomponents: [] }));
    }
    if (e.scope.kind === 'repository') {
      if (v.endsWith('*')) return [{ id: `urn:writ:repository-prefix:${encodeURIComponent(v.slice(0, -1))}`, subcomponents: [] }];
      return [{ id: ociPurl(v), purl: ociPurl(v), subcomponents: [] }];
    }
    if (v.startsWith('pkg:')) return [{ id: v, purl: v, subcomponents: [] }];
    return [{ id: `urn:writ:package-name:${encodeURIComponent(v)}`, subcomponents: [] }];
  });
}

/** An active exception as an OpenVEX statement: `not_affected`, its reason as the impact statement (see docs/vulnerabilities.md). */
export function exceptionStatement(e: VulnException, now: number, repositoriesOf?: (digest: string) => readonly string[]): VexStatement {
  return {
    vulnerability: e.vulnerability,
    aliases: [],
    products: exceptionProducts(e, repositoriesOf),
    status: 'not_affected',
    // None of the five justifications says "an accepted risk": the spec allows an impact statement instead.
    impactStatement: `Accepted risk (Writ VulnException ${e.name}${e.owner ? `, owner ${e.owner}` : ''}, until ${new Date(e.expires).toISOString()}): ${e.reason}`,
    timestamp: new Date(now).toISOString(),
  };
}

export function vexRoutes(ctx: ApiContext, add: AddRoute): void {
  add(
    'GET',
    '/v1/vex',
    'viewer',
    'Stored OpenVEX documents (latest version of each @id) and their statements; ?vulnerability=ID: only the statements about it (by name or alias).',
    async (req) => {
      const vulnerability = vulnParam(req.query.get('vulnerability'));
      const [documents, statements] = await Promise.all([
        ctx.store.listVexDocuments(),
        ctx.store.listVexStatements(vulnerability === undefined ? {} : { vulnerability }),
      ]);
      return ok({
        documents: documents.map((d) => ({
          id: d.id,
          author: d.author,
          role: d.role,
          version: d.version,
          timestamp: isoOrNull(d.issuedAt),
          statements: d.statementCount,
          ingestedAt: new Date(d.ingestedAt).toISOString(),
        })),
        statements: statements.map(statementJson),
      });
    },
    undefined,
    { vulnerability: stringParam(200) },
  );

  add(
    'GET',
    '/v1/vex/export',
    'viewer',
    'An OpenVEX v0.2.0 document of the stored statements and the active VulnExceptions (as not_affected, their reason as impact_statement); ?vulnerability=ID: only those about it. Its version is the time it was made (ms), so a later export always has a higher one.',
    async (req) => {
      const vulnerability = vulnParam(req.query.get('vulnerability'));
      const now = ctx.clock();
      const [stored, exceptions] = await Promise.all([
        ctx.store.listVexStatements(vulnerability === undefined ? {} : { vulnerability }),
        ctx.suppressions.vulnExceptions(),
      ]);
      const active = exceptions.filter((e) => e.expires > now && (vulnerability === undefined || e.vulnerability === vulnerability));
      // The repositories the inventory knows each excepted digest under (a few digests at most).
      const digests = [...new Set(active.flatMap((e) => (e.scope.kind === 'digest' ? e.scope.values : [])))];
      const names = new Map(
        await Promise.all(digests.map(async (d) => [d, [...new Set((await ctx.store.getImage(d))?.image.names.map(repositoryOf) ?? [])].sort()] as const)),
      );
      const statements: VexStatement[] = [
        ...stored.map(({ document: _d, ...s }) => s),
        ...active.sort((a, b) => (a.name < b.name ? -1 : 1)).map((e) => exceptionStatement(e, now, (d) => names.get(d) ?? [])),
      ];
      return ok(
        openVexDocument({
          id: `urn:writ:${ctx.trustDomain}:vex-export${vulnerability === undefined ? '' : `:${vulnerability}`}`,
          author: `spiffe://${ctx.trustDomain}`,
          role: `Writ server ${VERSION}`,
          version: now,
          timestamp: new Date(now).toISOString(),
          statements,
        }),
      );
    },
    undefined,
    { vulnerability: stringParam(200) },
  );

  add('DELETE', '/v1/vex/{id}', 'operator', 'Remove a stored OpenVEX document and its statements (id: its URL-encoded @id).', async (req) => {
    const id = decodeURIComponent(req.params[0]!);
    if (!(await ctx.store.deleteVexDocument(id))) throw new WritError('ERR_NOT_FOUND', `no OpenVEX document ${JSON.stringify(id.slice(0, 200))}`);
    return { status: 204, body: '' };
  });
}
