/**
 * `writ admission check`: the webhook's verdict offline, for CI pipelines. The same evaluate() the
 * server runs, on the Pods and workloads of a manifest, against `--pss` and/or the AdmissionPolicy
 * and AdmissionException documents of `--policy` files. No server.
 */
import type { Command } from 'commander';
import type { CheckFlags } from './admission-check.ts';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** Adds `check` to the `writ admission` command. */
export function registerAdmissionCheck(admission: Command): void {
  admission
    .command('check')
    .description(
      'check Pods and workloads (Deployment, StatefulSet, DaemonSet, Job, CronJob, ...) offline, as the admission webhook would: Pod Security Standards (--pss) and/or AdmissionPolicy/AdmissionException files (--policy); exit 0 all admitted, 3 any denied, 1 error',
    )
    .requiredOption('-f, --file <file>', 'the objects: YAML or JSON, one or many documents, a List too ("-" for stdin)')
    .option(
      '--pss <level>',
      'Pod Security Standards level for every namespace: baseline, restricted, or privileged (which admits everything, as in Kubernetes; only --policy can deny then); needed without --policy',
    )
    .option('--pss-version <version>', 'policy version: v1.NN or latest (default latest)')
    .option('--policy <file>', 'AdmissionPolicy and AdmissionException documents (repeatable)', collect)
    .option('-n, --namespace <ns>', 'the namespace of objects that name none', 'default')
    .option('--at <time>', 'decide as of this RFC 3339 time (which exceptions are in force; default now)')
    .option('--ignore-other-kinds', 'skip documents without a pod (Services, ConfigMaps, ...) instead of refusing them')
    .option('--registry-config <file>', "per-registry CA and credentials, for policies that check images (the server's format)")
    .option(
      '--report <file>',
      'a scanner report (Trivy, Grype, CycloneDX, SPDX) for images.vulnerabilities, filed under the digest it names (repeatable); without one that control refuses, as it cannot be checked offline; VulnExceptions in --policy files apply, VEX statements (on the server) do not',
      collect,
    )
    .action(async (f: CheckFlags, cmd: Command) => (await import('./admission-check.ts')).runAdmissionCheck(f, cmd));
}
