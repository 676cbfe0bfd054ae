/** Federation relationships (issue 14): SQL shared by SQLite and PostgreSQL. */
import { WritError } from '@writ/spiffe';
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';
import type { FederationProfile, FederationRelationship, FederationStatusUpdate } from './types.ts';

const nullableNum = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toRelationship(r: Row): FederationRelationship {
  return {
    trustDomain: r['trust_domain'] as string,
    bundleEndpointUrl: r['bundle_endpoint_url'] as string,
    profile: r['profile'] as FederationProfile,
    endpointSpiffeId: (r['endpoint_spiffe_id'] as string | null) ?? null,
    createdAt: Number(r['created_at']),
    lastSuccessAt: nullableNum(r['last_success_at']),
    lastError: (r['last_error'] as string | null) ?? null,
    lastErrorCode: (r['last_error_code'] as string | null) ?? null,
    lastErrorAt: nullableNum(r['last_error_at']),
    sequence: nullableNum(r['sequence']),
    refreshHint: nullableNum(r['refresh_hint']),
    nextRefreshAt: Number(r['next_refresh_at']),
  };
}

const COLUMNS: Record<keyof FederationStatusUpdate, string> = {
  lastSuccessAt: 'last_success_at',
  lastError: 'last_error',
  lastErrorCode: 'last_error_code',
  lastErrorAt: 'last_error_at',
  sequence: 'sequence',
  refreshHint: 'refresh_hint',
  nextRefreshAt: 'next_refresh_at',
};

export async function createFederation(db: SqlExecutor & Pick<SqlDriver, 'isUniqueViolation'>, f: FederationRelationship): Promise<void> {
  try {
    await db.execute(
      `INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, last_success_at,
         last_error, last_error_code, last_error_at, sequence, refresh_hint, next_refresh_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        f.trustDomain,
        f.bundleEndpointUrl,
        f.profile,
        f.endpointSpiffeId,
        f.createdAt,
        f.lastSuccessAt,
        f.lastError,
        f.lastErrorCode,
        f.lastErrorAt,
        f.sequence,
        f.refreshHint,
        f.nextRefreshAt,
      ],
    );
  } catch (err) {
    if (db.isUniqueViolation(err))
      throw new WritError('ERR_FEDERATION_EXISTS', `a federation relationship with trust domain "${f.trustDomain}" exists already`, { field: 'trustDomain' });
    throw err;
  }
}

export async function getFederation(db: SqlDriver, trustDomain: string): Promise<FederationRelationship | undefined> {
  const rows = await db.query('SELECT * FROM federation_relationships WHERE trust_domain = ?', [trustDomain]);
  return rows[0] ? toRelationship(rows[0]) : undefined;
}

export async function listFederations(db: SqlDriver): Promise<FederationRelationship[]> {
  return (await db.query('SELECT * FROM federation_relationships ORDER BY trust_domain')).map(toRelationship);
}

export async function updateFederation(db: SqlDriver, trustDomain: string, u: FederationStatusUpdate): Promise<boolean> {
  const sets: string[] = [];
  const params: SqlValue[] = [];
  for (const [k, col] of Object.entries(COLUMNS) as Array<[keyof FederationStatusUpdate, string]>) {
    if (!(k in u)) continue;
    sets.push(`${col} = ?`);
    params.push(u[k] ?? null);
  }
  if (sets.length === 0) return (await getFederation(db, trustDomain)) !== undefined;
  return (await db.execute(`UPDATE federation_relationships SET ${sets.join(', ')} WHERE trust_domain = ?`, [...params, trustDomain])) > 0;
}

export async function deleteFederation(db: SqlExecutor, trustDomain: string): Promise<boolean> {
  return (await db.execute('DELETE FROM federation_relationships WHERE trust_domain = ?', [trustDomain])) > 0;
}
