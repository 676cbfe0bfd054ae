/**
 * What `writ admission check` runs (admission.ts declares the command): loaded only when it runs, so
 * other commands, the agent above all, never load @writ/admission, @writ/oci and @writ/vuln.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { type Command, CommanderError } from 'commander';
import {
  type AdmissionPolicy,
  type AdmissionSet,
  type AdmissionVerdict,
  evaluate,
  parseAdmission,
  type PssLevel,
  readObjects,
  resolvePssVersion,
} from '@writ/admission';
import { ImageVerifier, RegistryClient, loadRegistryConfig, type ImageChecker } from '@writ/oci';
import { WritError } from '@writ/spiffe';
import { parseVulnExceptions, suppressionSet } from '@writ/vuln';
import { reportChecker } from './admission-reports.ts';
import { withFlagHint } from './image-verify.ts';
import { checkFormat, print } from './output.ts';

/** An unreadable -f file is ERR_ADMISSION_OBJECT_INVALID, an unreadable --policy file ERR_POLICY_INVALID (as docs/admission-policy.md says). */
function readInput(file: string, code: 'ERR_ADMISSION_OBJECT_INVALID' | 'ERR_POLICY_INVALID'): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError(code, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

/** The checker the webhook uses: @writ/oci's RegistryClient (with `--registry-config`) under its ImageVerifier. */
export function imageCheckerForCli(registryConfig: string | undefined): ImageChecker {
  return new ImageVerifier({ registry: new RegistryClient(registryConfig === undefined ? {} : { config: loadRegistryConfig(registryConfig) }) });
}

/** Key files named relative to a --policy file are read from beside it (absolute ones as they are). */
function keyReader(policyFiles: readonly string[]): (path: string) => Buffer {
  return (path) => {
    if (isAbsolute(path)) return readFileSync(path);
    for (const dir of new Set(policyFiles.map((f) => dirname(resolve(f))))) {
      const p = join(dir, path);
      if (existsSync(p)) return readFileSync(p);
    }
    return readFileSync(path);
  };
}

export interface CheckFlags {
  file: string;
  pss?: string;
  pssVersion?: string;
  policy?: string[];
  namespace: string;
  at?: string;
  ignoreOtherKinds?: boolean;
  registryConfig?: string;
  report?: string[];
}

export interface CheckResult {
  readonly kind: string;
  readonly name: string;
  readonly namespace: string;
  readonly allowed: boolean;
  /** Each violation once, with every source that found it (`--pss LEVEL`, `AdmissionPolicy/NAME`). */
  readonly violations: Array<{ control: string; message: string; container: string | null; policies: string[] }>;
  /** Tags judged by the digest they resolve to, as the mutating webhook pins them before the validating one looks. */
  readonly pinned: Array<{ image: string; pinned: string }>;
}

const PSS_SOURCE = (level: string): string => `--pss ${level}`;

/** Each violation once, with the policies that found it: --pss and a policy at the same level find the same ones. */
function mergeViolations(findings: AdmissionVerdict['violations'], pssSource: string | undefined): CheckResult['violations'] {
  const out = new Map<string, CheckResult['violations'][number]>();
  for (const v of findings) {
    const key = JSON.stringify([v.control, v.container ?? null, v.message]);
    const source = v.policy === pssSource ? v.policy : `AdmissionPolicy/${v.policy}`;
    const seen = out.get(key);
    if (seen) {
      if (!seen.policies.includes(source)) seen.policies.push(source);
    } else out.set(key, { control: v.control, message: withFlagHint(v.message), container: v.container ?? null, policies: [source] });
  }
  return [...out.values()];
}

/** `writ admission check`: evaluates every object of `-f` and prints the verdicts. */
export async function runAdmissionCheck(f: CheckFlags, cmd: Command): Promise<void> {
  const format = checkFormat(cmd.optsWithGlobals<{ output: string }>().output);
  if (!f.pss && !f.policy?.length) throw new CommanderError(2, 'writ.usage', 'give --pss baseline|restricted, or --policy FILE');
  if (f.pss && !['baseline', 'restricted', 'privileged'].includes(f.pss))
    throw new CommanderError(2, 'writ.usage', `--pss ${JSON.stringify(f.pss)}: baseline, restricted or privileged`);
  if (f.pssVersion !== undefined && !f.pss) throw new CommanderError(2, 'writ.usage', '--pss-version needs --pss');
  try {
    resolvePssVersion(f.pssVersion ?? 'latest');
  } catch {
    throw new CommanderError(2, 'writ.usage', `--pss-version ${JSON.stringify(f.pssVersion)}: v1.NN (like v1.30) or latest`);
  }
  const now = f.at === undefined ? Date.now() : Date.parse(f.at);
  if (!Number.isFinite(now) || (f.at !== undefined && !/^\d{4}-\d\d-\d\dT/.test(f.at)))
    throw new CommanderError(2, 'writ.usage', `--at ${JSON.stringify(f.at)}: an RFC 3339 time like 2027-01-01T00:00:00Z`);

  const policies: AdmissionPolicy[] = [];
  const exceptions: AdmissionSet['exceptions'][number][] = [];
  if (f.pss)
    policies.push({
      // Not a Kubernetes name, so never the name of a --policy document: the source shown with its violations.
      name: PSS_SOURCE(f.pss),
      namespaces: ['*'],
      mode: 'enforce',
      podSecurity: { level: f.pss as PssLevel, version: f.pssVersion ?? 'latest' },
      require: { resourceLimits: false, readOnlyRootFilesystem: false, runtimeClassNames: [] },
      line: 0,
      source: '',
    });
  for (const file of f.policy ?? []) {
    // Expired exceptions are read (not refused) and then have no effect, as on the server.
    const s = parseAdmission(readInput(file, 'ERR_POLICY_INVALID'), { file, now, allowExpired: true });
    policies.push(...s.policies);
    exceptions.push(...s.exceptions);
    for (const e of s.exceptions)
      if (e.expires <= now) process.stderr.write(`note: exception ${e.name} expired at ${new Date(e.expires).toISOString()}: it has no effect\n`);
  }
  const set: AdmissionSet = { policies, exceptions };
  const objects = readObjects(readInput(f.file, 'ERR_ADMISSION_OBJECT_INVALID'), {
    file: f.file,
    ...(f.ignoreOtherKinds ? { ignoreOtherKinds: true } : {}),
  });
  const images = policies.some((p) => p.images) ? imageCheckerForCli(f.registryConfig) : undefined;
  const readKeyFile = keyReader(f.policy ?? []);
  const vulnerabilities = f.report?.length
    ? reportChecker(
        f.report,
        suppressionSet(
          (f.policy ?? []).flatMap((file) => parseVulnExceptions(readInput(file, 'ERR_POLICY_INVALID'), { file, now, stored: true })),
          [],
        ),
        now,
      )
    : undefined;
  const results: Array<CheckResult & { verdict: AdmissionVerdict }> = [];
  for (const o of objects) {
    const namespace = o.namespace || f.namespace;
    const verdict = await evaluate({ kind: o.kind, namespace, name: o.name, operation: 'CREATE', object: o.object }, set, {
      now,
      signal: AbortSignal.timeout(30_000),
      readKeyFile,
      // The cluster runs both webhooks: the mutating one pins a tag that resolves, so requireDigest judges the digest.
      ...(images ? { images, pinTags: true } : {}),
      ...(vulnerabilities ? { vulnerabilities } : {}),
    });
    results.push({
      kind: o.kind,
      name: o.name,
      namespace,
      allowed: verdict.allowed,
      violations: mergeViolations(verdict.violations, f.pss ? PSS_SOURCE(f.pss) : undefined),
      pinned: verdict.images.flatMap((i) => (i.pinned && i.digest && !i.image.endsWith(`@${i.digest}`) ? [{ image: i.image, pinned: i.pinned }] : [])),
      verdict,
    });
  }
  const denied = results.filter((r) => !r.allowed).length;
  if (format === 'table') {
    for (const r of results) {
      // Admitted because nothing applies is not admitted because it passed.
      const none = r.verdict.policies.length === 0 ? ` (no policy applies to namespace ${r.namespace})` : '';
      process.stdout.write(`${r.allowed ? 'ADMITTED' : 'DENIED  '}  ${r.kind} ${r.namespace}/${r.name || '(no name)'}${none}\n`);
      for (const p of r.pinned) process.stdout.write(`  pinned: ${p.image} -> ${p.pinned}\n`);
      const sources = new Set(r.violations.flatMap((v) => v.policies)).size > 1;
      for (const v of r.violations) process.stdout.write(`  ${v.control}: ${v.message}${sources ? ` [${v.policies.join(', ')}]` : ''}\n`);
      for (const w of r.verdict.warnings) process.stdout.write(`  warning: ${w}\n`);
      for (const e of r.verdict.exceptionsUsed) process.stdout.write(`  exception ${e.name} waived ${e.controls.join(', ')}\n`);
    }
    process.stdout.write(`${results.length - denied} admitted, ${denied} denied\n`);
  } else print(format, { results: results.map(({ verdict: _v, ...r }) => r) });
  if (denied) throw new CommanderError(3, 'writ.violation', `${denied} of ${results.length} object${results.length === 1 ? '' : 's'} denied`);
}
