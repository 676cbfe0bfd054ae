/** Server configuration: flags over a YAML file over defaults (`db`: the flag, then env WRIT_DB, then the file), validated with errors naming the setting. */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { KEY_TYPES, WritError, parseDuration, parseSpiffeId, parseTrustDomain, type KeyType } from '@writ/spiffe';
import { checkPsatCluster, type PsatCluster } from './attest/psat.ts';
import { type VulnEventsConfig, vulnEventsConfig } from './vuln-events.ts';
import { type AlertsConfig, alertsConfig } from './alerts/service.ts';
import { parseOwnerRules, type OwnerRules } from './owners.ts';

export interface ServerConfig {
  readonly trustDomain: string;
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  /** `sqlite` (default), `sqlite:/path`, or a postgres:// URL: `--db`, else env WRIT_DB, else the file's `db`. Never logged whole (redactDbUrl). */
  readonly db: string;
  readonly caKeyType: KeyType;
  readonly caTtlMs: number;
  readonly x509SvidTtlMs: number;
  readonly jwtSvidTtlMs: number;
  /** `iss` of JWT-SVIDs and the OIDC discovery issuer; default the server's URL. */
  readonly jwtIssuer: string | undefined;
  /** Extra DNS names for the server's own certificate (localhost is always there). */
  readonly dnsNames: readonly string[];
  readonly upstreamCa: { readonly certFile: string; readonly keyFile: string; readonly bundleFile: string | undefined } | undefined;
  /** Key-encryption key for private keys at rest (from WRIT_KEK or kekFile); never logged. */
  readonly kek: string | undefined;
  readonly logLevel: string;
  /** k8s_psat node attestation: clusters by name (YAML only). */
  readonly k8sPsat: Record<string, PsatCluster>;
  /** Identities that may still call and be called by quarantined workloads (YAML only). */
  readonly breakGlass: readonly string[];
  /** How long decision-log records (and edges not seen since) are kept; admission events too. */
  readonly decisionRetentionMs: number;
  /** The admission webhook's own listener (`--admission-listen`); undefined: off. */
  readonly admission: AdmissionListenConfig | undefined;
  /** Per-registry CA and credentials for image checks (`--registry-config`, @writ/oci's format). */
  readonly registryConfigFile: string | undefined;
  /** Every entry's SVIDs only for containers whose image digest was admitted under an enforce policy. */
  readonly requireAdmittedImage: boolean;
  /** Vulnerability events: the severity that raises one, and the webhook they go to (YAML only). */
  readonly vulnEvents: VulnEventsConfig;
  /** Alerts (issue 15, section 3): the server-wide webhook, automatic quarantine limit, bounds. */
  readonly alerts: AlertsConfig;
  /** `--report-limit`: the largest scanner report `POST /v1/reports` takes, in bytes. */
  readonly reportLimitBytes: number;
  /** The longest a VulnException may run (`vulnExceptionMaxAge`, default 90d): `expires` further away is refused at apply. */
  readonly vulnExceptionMaxMs: number;
  /** Who owns a running workload: label and annotation keys, a namespace map (YAML only; owners.ts). */
  readonly owners: OwnerRules;
  /** The SPIFFE bundle endpoint's own listener (`--bundle-endpoint-listen`); undefined: off. */
  readonly bundleEndpoint: BundleEndpointConfig | undefined;
  /** `--federation-timeout`: how long one fetch of a peer's bundle may take (default 10s). */
  readonly federationTimeoutMs: number;
}

/** The bundle endpoint listener (SPIFFE_Federation.md section 5): either profile. */
export interface BundleEndpointConfig {
  readonly host: string;
  readonly port: number;
  /** https_spiffe: the server's own X.509-SVID (spiffe://TD/writ/server); https_web: certFile and keyFile. */
  readonly profile: 'https_web' | 'https_spiffe';
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
}

export interface AdmissionListenConfig {
  readonly host: string;
  readonly port: number;
  /** DNS SANs of the listener's certificate: the Service name the API server calls. */
  readonly dnsNames: readonly string[];
  /** When set, only clients presenting a certificate chained to this CA are answered. */
  readonly clientCaFile: string | undefined;
  /** The decision budget: a verdict not reached by then is answered as such (a deny in enforce mode). */
  readonly budgetMs: number;
}

export const SERVER_DEFAULTS = {
  listen: '127.0.0.1:8443',
  db: 'sqlite',
  caKeyType: 'ec-p256',
  caTtl: '24h',
  x509SvidTtl: '1h',
  jwtSvidTtl: '5m',
  decisionRetention: '7d',
  logLevel: 'info',
  admissionDns: 'writ-admission.writ-system.svc',
  admissionBudget: '2s',
  reportLimit: '64MiB',
  vulnExceptionMaxAge: '90d',
  bundleEndpointProfile: 'https_spiffe',
  federationTimeout: '10s',
} as const;

/** The largest `--report-limit`: the body is held and parsed in memory as one string. */
export const MAX_REPORT_LIMIT_BYTES = 256 * 1024 * 1024;

/** `64MiB`, `512KiB`, `1GiB`, or bytes: a size in bytes. */
export function parseByteSize(v: string, field: string, max: number, min = 1024): number {
  const m = /^(\d{1,12})\s*(B|KiB|MiB|GiB)?$/.exec(v.trim());
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m?.[2] ?? 'B'] ?? 1;
  const n = m ? Number(m[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(n)) bad(field, `${JSON.stringify(v.slice(0, 40))} is not a size like 64MiB, 512KiB or a number of bytes`);
  if (n < min || n > max) bad(field, `${v} is outside ${min} bytes .. ${max / 1024 ** 2}MiB`);
  return n;
}

/** Above this the API server gives up first (its webhook timeoutSeconds is at most 30). */
export const MAX_ADMISSION_BUDGET_MS = 25_000;

const KEYS = [
  'trustDomain',
  'dataDir',
  'listen',
  'db',
  'caKeyType',
  'caTtl',
  'x509SvidTtl',
  'jwtSvidTtl',
  'jwtIssuer',
  'dnsNames',
  'upstreamCa',
  'kekFile',
  'logLevel',
  'k8sPsat',
  'breakGlass',
  'decisionRetention',
  'admissionListen',
  'admissionDns',
  'admissionClientCa',
  'admissionBudget',
  'registryConfig',
  'requireAdmittedImage',
  'vulnEvents',
  'alerts',
  'reportLimit',
  'vulnExceptionMaxAge',
  'owners',
  'bundleEndpointListen',
  'bundleEndpointProfile',
  'bundleEndpointCert',
  'bundleEndpointKey',
  'federationTimeout',
] as const;
type Key = (typeof KEYS)[number];
/** Settings that are not strings: read by their own code, not `get`. */
type Structured = 'upstreamCa' | 'dnsNames' | 'k8sPsat' | 'breakGlass' | 'requireAdmittedImage' | 'admissionDns' | 'vulnEvents' | 'alerts' | 'owners';
export type ServerFlags = Partial<Record<Exclude<Key, Structured>, string>> & {
  requireAdmittedImage?: boolean;
  config?: string;
  dnsNames?: string[];
  /** Comma-separated on the command line; a list in the file. */
  admissionDns?: string[] | string;
  upstreamCaCert?: string;
  upstreamCaKey?: string;
  upstreamCaBundle?: string;
};

function bad(field: string, msg: string): never {
  throw new WritError('ERR_CONFIG_INVALID', `${field}: ${msg}`, { field });
}

export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) bad('listen', `${JSON.stringify(v)} is not HOST:PORT (e.g. 127.0.0.1:8443, [::1]:8443, 0.0.0.0:8443)`);
  return { host: (m[1] ?? m[2])!, port };
}

const PSAT_KEYS = ['jwksUrl', 'jwksFile', 'jwksCaFile', 'jwksTokenFile', 'issuer', 'audience', 'serviceAccounts'];

function psatClusters(v: unknown): Record<string, PsatCluster> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v))
    bad('k8sPsat', 'must map cluster names to { jwksUrl | jwksFile, jwksCaFile?, jwksTokenFile?, issuer?, audience?, serviceAccounts? }');
  const out: Record<string, PsatCluster> = {};
  for (const [name, c] of Object.entries(v as Record<string, unknown>)) {
    if (!c || typeof c !== 'object' || Array.isArray(c)) bad(`k8sPsat.${name}`, 'must be a mapping');
    for (const k of Object.keys(c)) if (!PSAT_KEYS.includes(k)) bad(`k8sPsat.${name}.${k}`, `unknown setting; known: ${PSAT_KEYS.join(', ')}`);
    checkPsatCluster(name, c as PsatCluster);
    out[name] = c as PsatCluster;
  }
  return out;
}

function breakGlassIds(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) bad('breakGlass', 'must be a list of SPIFFE IDs');
  return v.map((id, i) => {
    try {
      return parseSpiffeId(String(id)).uri;
    } catch (err) {
      return bad(`breakGlass[${i}]`, (err as Error).message);
    }
  });
}

export function loadServerConfig(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  let file: Record<string, unknown> = {};
  if (flags.config) {
    let text: string;
    try {
      text = readFileSync(flags.config, 'utf8');
    } catch (err) {
      return bad('config', `cannot read ${flags.config}: ${(err as NodeJS.ErrnoException).code}`);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text, { maxAliasCount: 10 });
    } catch (err) {
      return bad('config', `${flags.config} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) bad('config', `${flags.config} must be a mapping of settings`);
      file = doc as Record<string, unknown>;
      for (const k of Object.keys(file)) if (!(KEYS as readonly string[]).includes(k)) bad(k, `unknown setting in ${flags.config}; known: ${KEYS.join(', ')}`);
    }
  }
  const get = (k: Exclude<Key, Structured>): string | undefined => {
    const v = flags[k] ?? file[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number') bad(k, 'must be a string');
    return String(v);
  };
  const trustDomain = get('trustDomain') ?? bad('trustDomain', 'is required (--trust-domain example.org)');
  try {
    parseTrustDomain(trustDomain);
  } catch (err) {
    bad('trustDomain', (err as Error).message);
  }
  const dataDir = resolve(get('dataDir') ?? bad('dataDir', 'is required (--data-dir DIR)'));
  const { host, port } = parseListen(get('listen') ?? SERVER_DEFAULTS.listen);
  const caKeyType = (get('caKeyType') ?? SERVER_DEFAULTS.caKeyType) as KeyType;
  if (!KEY_TYPES.includes(caKeyType)) bad('caKeyType', `must be one of ${KEY_TYPES.join(', ')}`);
  const dur = (
    k: 'caTtl' | 'x509SvidTtl' | 'jwtSvidTtl' | 'decisionRetention' | 'admissionBudget' | 'vulnExceptionMaxAge' | 'federationTimeout',
    max: number,
    min = 1000,
  ): number => parseDuration(get(k) ?? SERVER_DEFAULTS[k], k, max, min);
  const caTtlMs = dur('caTtl', 10 * 366 * 86_400_000);
  const x509SvidTtlMs = dur('x509SvidTtl', 30 * 86_400_000);
  const jwtSvidTtlMs = dur('jwtSvidTtl', 86_400_000);
  // A dry run replays the last day's edges: less than a day would leave it less to replay.
  const decisionRetentionMs = dur('decisionRetention', 10 * 366 * 86_400_000, 86_400_000);
  const dnsRaw = flags.dnsNames ?? file['dnsNames'] ?? [];
  if (!Array.isArray(dnsRaw) || dnsRaw.some((d) => typeof d !== 'string')) bad('dnsNames', 'must be a list of DNS names');
  const up = file['upstreamCa'] as Record<string, unknown> | undefined;
  const certFile = flags.upstreamCaCert ?? (up?.['certFile'] as string | undefined);
  const keyFile = flags.upstreamCaKey ?? (up?.['keyFile'] as string | undefined);
  const bundleFile = flags.upstreamCaBundle ?? (up?.['bundleFile'] as string | undefined);
  if ((certFile === undefined) !== (keyFile === undefined)) bad('upstreamCa', 'needs both a certificate file and a key file');
  let kek = env['WRIT_KEK'] || undefined;
  const kekFile = get('kekFile');
  if (kekFile) {
    try {
      kek = readFileSync(kekFile, 'utf8').trim();
    } catch (err) {
      bad('kekFile', `cannot read ${kekFile}: ${(err as NodeJS.ErrnoException).code}`);
    }
    if (!kek) bad('kekFile', `${kekFile} is empty`);
  }
  const admission = admissionConfig(get('admissionListen'), flags.admissionDns ?? file['admissionDns'], get('admissionClientCa'), () =>
    dur('admissionBudget', MAX_ADMISSION_BUDGET_MS, 100),
  );
  const requireAdmittedImage = flags.requireAdmittedImage ?? file['requireAdmittedImage'] ?? false;
  if (typeof requireAdmittedImage !== 'boolean') bad('requireAdmittedImage', 'must be true or false');
  return {
    trustDomain,
    dataDir,
    host,
    port,
    // WRIT_DB between the flag and the file: a Kubernetes Secret reaches the server as an environment
    // variable, so the URL and its password are neither in a ConfigMap nor on the command line (ps).
    db: flags.db ?? (env['WRIT_DB'] || undefined) ?? get('db') ?? SERVER_DEFAULTS.db,
    caKeyType,
    caTtlMs,
    x509SvidTtlMs,
    jwtSvidTtlMs,
    jwtIssuer: get('jwtIssuer'),
    dnsNames: dnsRaw as string[],
    upstreamCa: certFile && keyFile ? { certFile, keyFile, bundleFile } : undefined,
    kek,
    logLevel: get('logLevel') ?? SERVER_DEFAULTS.logLevel,
    k8sPsat: psatClusters(file['k8sPsat']),
    breakGlass: breakGlassIds(file['breakGlass']),
    decisionRetentionMs,
    admission,
    registryConfigFile: get('registryConfig'),
    requireAdmittedImage,
    vulnEvents: vulnEventsConfig(file['vulnEvents']),
    alerts: alertsConfig(file['alerts']),
    reportLimitBytes: parseByteSize(get('reportLimit') ?? SERVER_DEFAULTS.reportLimit, 'reportLimit', MAX_REPORT_LIMIT_BYTES),
    vulnExceptionMaxMs: dur('vulnExceptionMaxAge', 10 * 366 * 86_400_000, 60_000),
    owners: parseOwnerRules(file['owners']),
    bundleEndpoint: bundleEndpointConfig(get('bundleEndpointListen'), get('bundleEndpointProfile'), get('bundleEndpointCert'), get('bundleEndpointKey')),
    federationTimeoutMs: dur('federationTimeout', 120_000, 100),
  };
}

function bundleEndpointConfig(
  listen: string | undefined,
  profileRaw: string | undefined,
  certFile: string | undefined,
  keyFile: string | undefined,
): BundleEndpointConfig | undefined {
  const profile = profileRaw ?? SERVER_DEFAULTS.bundleEndpointProfile;
  if (profile !== 'https_web' && profile !== 'https_spiffe')
    bad('bundleEndpointProfile', `must be https_web or https_spiffe, not ${JSON.stringify(profile.slice(0, 40))}`);
  if (listen === undefined) {
    if (certFile !== undefined || keyFile !== undefined || profileRaw !== undefined)
      bad('bundleEndpointListen', 'is needed for the other bundle endpoint settings');
    return undefined;
  }
  let where: { host: string; port: number };
  try {
    where = parseListen(listen);
  } catch (err) {
    return bad('bundleEndpointListen', (err as Error).message.replace(/^listen: /, ''));
  }
  if (profile === 'https_web') {
    if (certFile === undefined || keyFile === undefined)
      bad('bundleEndpointCert', 'the https_web profile needs --bundle-endpoint-cert and --bundle-endpoint-key (PEM files)');
    for (const [field, f] of [
      ['bundleEndpointCert', certFile],
      ['bundleEndpointKey', keyFile],
    ] as const)
      if (!existsSync(f)) bad(field, `${f} does not exist`);
  } else if (certFile !== undefined || keyFile !== undefined) {
    bad('bundleEndpointCert', "the https_spiffe profile serves with the server's own SVID: no certificate or key files");
  }
  return { ...where, profile, certFile, keyFile };
}

function admissionConfig(listen: string | undefined, dns: unknown, clientCaFile: string | undefined, budget: () => number): AdmissionListenConfig | undefined {
  const budgetMs = budget(); // checked even when the listener is off: a typo should not wait for the day it is turned on
  if (listen === undefined) {
    if (clientCaFile !== undefined) bad('admissionClientCa', 'needs --admission-listen');
    return undefined;
  }
  let where: { host: string; port: number };
  try {
    where = parseListen(listen);
  } catch (err) {
    return bad('admissionListen', (err as Error).message.replace(/^listen: /, ''));
  }
  const raw = dns ?? SERVER_DEFAULTS.admissionDns;
  const list = typeof raw === 'string' ? raw.split(',').map((d) => d.trim()) : raw;
  if (!Array.isArray(list) || list.length === 0 || list.some((d) => typeof d !== 'string' || !DNS_NAME.test(d)))
    bad('admissionDns', 'must be DNS names, comma-separated (e.g. writ-admission.writ-system.svc)');
  if (clientCaFile !== undefined && !existsSync(clientCaFile)) bad('admissionClientCa', `${clientCaFile} does not exist`);
  return { ...where, dnsNames: list as string[], clientCaFile, budgetMs };
}

const DNS_NAME = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/i;
