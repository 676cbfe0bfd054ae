/**
 * Per-registry settings (`writ server --registry-config FILE`, and the CLI's `--registry-config`):
 *
 *   registries:
 *     registry.example.com:
 *       ca: /etc/writ/registry-ca.pem        # a PEM file, or the PEM inline
 *       username: robot
 *       passwordFile: /etc/writ/registry-password
 *     "127.0.0.1:5000": { insecureHttp: true }
 *   default: { ca: /etc/ssl/corp-ca.pem }    # for every registry not named above
 *
 * `token` is a bearer token sent as it is (a registry token); `username` with `password` or
 * `passwordFile` is used for basic auth and at a bearer token endpoint. Secrets are kept in
 * #private fields: they never appear in JSON, `util.inspect` or an error message.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { WritError } from '@writ/spiffe';
import { parse as parseYaml } from 'yaml';
import { isRegistryHost } from './reference.ts';

/** Checked before any YAML decoding. */
export const MAX_REGISTRY_CONFIG_BYTES = 1024 * 1024;
const MAX_SECRET_FILE_BYTES = 64 * 1024;

const SETTINGS_KEYS = ['ca', 'username', 'password', 'passwordFile', 'token', 'insecureHttp'] as const;
const TOP_KEYS = ['registries', 'default'] as const;

/** How to talk to one registry. */
export class RegistrySettings {
  /** PEM of the CA certificates to trust for this registry (instead of the system's), if set. */
  readonly ca: string | undefined;
  readonly username: string | undefined;
  /** Plain HTTP (a local test registry); never the default. */
  readonly insecureHttp: boolean;
  readonly #password: string | undefined;
  readonly #token: string | undefined;

  constructor(
    s: {
      ca?: string | undefined;
      username?: string | undefined;
      password?: string | undefined;
      token?: string | undefined;
      insecureHttp?: boolean | undefined;
    } = {},
  ) {
    this.ca = s.ca;
    this.username = s.username;
    this.#password = s.password;
    this.#token = s.token;
    this.insecureHttp = s.insecureHttp ?? false;
  }

  /** `Basic ...` for username + password, if both are set. */
  basicAuthorization(): string | undefined {
    if (this.username === undefined || this.#password === undefined) return undefined;
    return `Basic ${Buffer.from(`${this.username}:${this.#password}`).toString('base64')}`;
  }

  /** `Bearer ...` for a configured registry token, if set. */
  tokenAuthorization(): string | undefined {
    return this.#token === undefined ? undefined : `Bearer ${this.#token}`;
  }

  /** What may be shown: which settings are present, never their secret values. */
  toJSON(): Record<string, unknown> {
    return {
      ca: this.ca === undefined ? undefined : 'set',
      username: this.username,
      password: this.#password === undefined ? undefined : '[redacted]',
      token: this.#token === undefined ? undefined : '[redacted]',
      insecureHttp: this.insecureHttp,
    };
  }
}

/** The settings of every configured registry, and the default for the others. */
export class RegistryConfig {
  readonly #registries: ReadonlyMap<string, RegistrySettings>;
  readonly default: RegistrySettings;

  constructor(registries: ReadonlyMap<string, RegistrySettings> = new Map(), fallback: RegistrySettings = new RegistrySettings()) {
    this.#registries = new Map([...registries].map(([host, s]) => [normalHost(host), s]));
    this.default = fallback;
  }

  /** The settings for `host[:port]` (registry host names are case-insensitive). */
  settingsFor(host: string): RegistrySettings {
    return this.#registries.get(normalHost(host)) ?? this.default;
  }

  /** The hosts named in the file. */
  hosts(): string[] {
    return [...this.#registries.keys()];
  }

  toJSON(): Record<string, unknown> {
    return { registries: Object.fromEntries([...this.#registries].map(([h, s]) => [h, s.toJSON()])), default: this.default.toJSON() };
  }
}

function normalHost(host: string): string {
  const h = host.toLowerCase();
  return h === 'index.docker.io' || h === 'registry-1.docker.io' ? 'docker.io' : h;
}

function bad(field: string, message: string): never {
  throw new WritError('ERR_REGISTRY_CONFIG_INVALID', `${field}: ${message}`, { field });
}

export interface RegistryConfigOptions {
  /** Where relative `ca` and `passwordFile` paths start (the config file's folder). Default: the working directory. */
  readonly baseDir?: string;
  /** Named in errors (default `registry config`). */
  readonly source?: string;
}

function readSmallFile(field: string, path: string, baseDir: string, limit: number): string {
  const full = isAbsolute(path) ? path : resolve(baseDir, path);
  try {
    const size = statSync(full).size;
    if (size > limit) bad(field, `${path} is ${size} bytes, more than ${limit}`);
    return readFileSync(full, 'utf8');
  } catch (err) {
    if (err instanceof WritError) throw err;
    return bad(field, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function caPem(field: string, v: unknown, baseDir: string): string {
  if (typeof v !== 'string' || v.trim() === '') bad(field, 'must be a PEM file path or inline PEM certificates');
  const pem = v.includes('-----BEGIN') ? v : readSmallFile(field, v, baseDir, MAX_REGISTRY_CONFIG_BYTES);
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) bad(field, 'holds no PEM CERTIFICATE block');
  for (const [i, b] of blocks.entries()) {
    try {
      new X509Certificate(b);
    } catch {
      bad(field, `certificate ${i + 1} is not a valid X.509 certificate`);
    }
  }
  return blocks.join('\n');
}

function str(field: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') bad(field, 'must be a non-empty string');
  if (/[\r\n\0]/.test(v)) bad(field, 'must be one line');
  return v;
}

function settings(field: string, v: unknown, baseDir: string): RegistrySettings {
  if (v === null || v === undefined) return new RegistrySettings();
  if (typeof v !== 'object' || Array.isArray(v)) bad(field, `must be a mapping of ${SETTINGS_KEYS.join(', ')}`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!(SETTINGS_KEYS as readonly string[]).includes(k)) bad(`${field}.${k}`, `unknown setting; known: ${SETTINGS_KEYS.join(', ')}`);
  if (o.password !== undefined && o.passwordFile !== undefined) bad(`${field}.password`, 'give password or passwordFile, not both');
  // Secret values are checked but never quoted back.
  let password: string | undefined;
  if (o.password !== undefined) password = str(`${field}.password`, o.password);
  if (o.passwordFile !== undefined) {
    password = readSmallFile(`${field}.passwordFile`, str(`${field}.passwordFile`, o.passwordFile), baseDir, MAX_SECRET_FILE_BYTES).replace(/\r?\n$/, '');
    if (password === '' || /[\r\n\0]/.test(password)) bad(`${field}.passwordFile`, 'must hold the password on one line');
  }
  const username = o.username === undefined ? undefined : str(`${field}.username`, o.username);
  if (username?.includes(':')) bad(`${field}.username`, 'must not contain ":" (basic auth)');
  if (password !== undefined && username === undefined) bad(`${field}.username`, 'is required with a password');
  if (username !== undefined && password === undefined) bad(`${field}.password`, 'is required with a username (password or passwordFile)');
  const token = o.token === undefined ? undefined : str(`${field}.token`, o.token);
  if (token !== undefined && username !== undefined) bad(`${field}.token`, 'give token or username/password, not both');
  if (o.insecureHttp !== undefined && typeof o.insecureHttp !== 'boolean') bad(`${field}.insecureHttp`, 'must be true or false');
  return new RegistrySettings({
    ca: o.ca === undefined ? undefined : caPem(`${field}.ca`, o.ca, baseDir),
    username,
    password,
    token,
    insecureHttp: o.insecureHttp === true,
  });
}

/**
 * Validates settings given as an object (a parsed file, or built by a test).
 *
 * @example registryConfig({ registries: { '127.0.0.1:5000': { ca: caPem, username: 'u', password: 'p' } } })
 * @throws WritError ERR_REGISTRY_CONFIG_INVALID naming the setting
 */
export function registryConfig(doc: unknown, opts: RegistryConfigOptions = {}): RegistryConfig {
  const baseDir = opts.baseDir ?? process.cwd();
  if (doc === null || doc === undefined) return new RegistryConfig();
  if (typeof doc !== 'object' || Array.isArray(doc)) bad(opts.source ?? 'registry config', 'must be a mapping with registries and default');
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!(TOP_KEYS as readonly string[]).includes(k)) bad(k, `unknown setting; known: ${TOP_KEYS.join(', ')}`);
  const registries = new Map<string, RegistrySettings>();
  if (o.registries !== undefined && o.registries !== null) {
    if (typeof o.registries !== 'object' || Array.isArray(o.registries)) bad('registries', 'must map "host[:port]" to its settings');
    for (const [host, s] of Object.entries(o.registries as Record<string, unknown>)) {
      const field = `registries.${JSON.stringify(host)}`;
      if (!isRegistryHost(host)) bad(field, 'is not a registry host[:port] (registry.example.com, 127.0.0.1:5000, [::1]:5000)');
      const key = normalHost(host);
      if (registries.has(key)) bad(field, `names the same registry as another entry (${key})`);
      registries.set(key, settings(field, s, baseDir));
    }
  }
  return new RegistryConfig(registries, settings('default', o.default, baseDir));
}

/**
 * Parses the YAML (or JSON) text of a registry settings file.
 * @throws WritError ERR_REGISTRY_CONFIG_INVALID (a YAML error says only where it is, so no secret on that line is echoed)
 */
export function parseRegistryConfig(text: string, opts: RegistryConfigOptions = {}): RegistryConfig {
  const source = opts.source ?? 'registry config';
  if (Buffer.byteLength(text) > MAX_REGISTRY_CONFIG_BYTES) bad(source, `larger than ${MAX_REGISTRY_CONFIG_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 10, uniqueKeys: true });
  } catch (err) {
    const pos = (err as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    const code = (err as { code?: unknown }).code;
    return bad(source, `is not valid YAML${pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`}${typeof code === 'string' ? ` (${code})` : ''}`);
  }
  return registryConfig(doc, { ...opts, source });
}

/** Reads and validates a registry settings file; relative paths in it start at its folder. */
export function loadRegistryConfig(file: string): RegistryConfig {
  const text = readSmallFile('registryConfig', file, process.cwd(), MAX_REGISTRY_CONFIG_BYTES);
  return parseRegistryConfig(text, { baseDir: dirname(resolve(file)), source: file });
}
