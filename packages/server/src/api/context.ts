/** What every route handler may use: the server's services, injected once at start. */
import type { RegistryReader } from '@writ/oci';
import type { CertificateAuthority } from '../ca/ca.ts';
import type { PsatAttestor } from '../attest/psat.ts';
import type { Metrics } from '../metrics.ts';
import type { OwnerRules } from '../owners.ts';
import type { Store } from '../store/types.ts';
import type { ChangeHub } from '../sync/hub.ts';
import type { FederationRefresher } from '../federation/refresher.ts';
import type { Suppressions } from '../suppressions.ts';
import type { AlertService } from '../alerts/service.ts';
import type { AuditLog } from '../audit/audit-log.ts';

export interface ApiContext {
  readonly store: Store;
  readonly ca: CertificateAuthority;
  /** Wake-ups, the shared sync snapshot and acknowledgements; it hears every store write by itself. */
  readonly hub: ChangeHub;
  readonly trustDomain: string;
  /** Base URL clients reach this server at, e.g. https://127.0.0.1:8443. */
  readonly publicUrl: string;
  readonly jwtIssuer: string;
  readonly metrics: Metrics;
  readonly clock: () => number;
  /** Resolves when the server can serve: store reachable and CA initialised. */
  readonly ready: () => Promise<void>;
  readonly psat?: PsatAttestor | undefined;
  readonly breakGlass: readonly string[];
  /** `--require-admitted-image`: every entry's SVIDs only for containers running an admitted image. */
  readonly requireAdmittedImage?: boolean;
  /** The inventory's registry client (`--registry-config`): `POST /v1/images` reads images through it. */
  readonly registry: RegistryReader;
  /** `--report-limit`: the largest `POST /v1/reports` body, in bytes. */
  readonly reportLimitBytes: number;
  /** The longest a VulnException may run (server config `vulnExceptionMaxAge`); default 90 days. */
  readonly vulnExceptionMaxMs?: number;
  /** Who owns a running workload (`owners` in the server config); default DEFAULT_OWNER_RULES. */
  readonly owners?: OwnerRules;
  /** Fetches federation peers' bundles (issue 14); `refresh now` goes through it. */
  readonly federation?: FederationRefresher;
  /** The VulnExceptions and VEX statements in force, parsed once per policy revision for this server. */
  readonly suppressions: Suppressions;
  /** Alert rules over decisions and events (issue 15, section 3); `raise()` for alerts from elsewhere. */
  readonly alerts?: AlertService;
  /** The audit log: checkpoints, entries and proofs (issue 15). */
  readonly audit: AuditLog;
}
