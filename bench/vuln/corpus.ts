/**
 * A deterministic corpus of Trivy JSON (schema 2) image reports for the vuln benchmark, shaped like
 * `trivy image -f json --list-all-pkgs` output (packages/vuln/src/testdata/trivy-image.json):
 *
 * - **Bases**: 7 distro releases (alpine, debian, ubuntu) × 5 language runtimes × 3 revisions, each
 *   two layers (the distro's, the runtime's) with 45 packages; a newer revision moves some packages
 *   to newer versions, so "a newer base without the CVE" exists for some CVEs and not for others.
 * - **Apps**: each built on one base (popular bases more often; newer revisions more often), its diff
 *   IDs the base's followed by one app layer with 55 language packages (so 100 packages in all),
 *   drawn from the runtime's ecosystem with Zipf-like popularity. Half name their base in the OCI
 *   base annotations (as image labels, which is where Trivy sees them); the rest only share its diff IDs.
 * - **CVEs** belong to a package name and affect a range of its versions, fixed in a later version
 *   for about 60% of them; how many images carry one follows from how popular its package is: a few
 *   are in thousands of images, most in a handful.
 *
 * `truth` counts, per CVE, the images whose report carries it, to check the answers against.
 */
import { createHash } from 'node:crypto';

export interface CorpusImage {
  /** Manifest digest (`sha256:...`). */
  readonly digest: string;
  readonly repository: string;
  readonly tag: string;
  /** Index into `bases` for an app, or -1 for a base itself. */
  readonly base: number;
  /** The Trivy JSON document. */
  readonly doc: unknown;
  /** The vulnerability IDs in the report, distinct. */
  readonly cves: readonly string[];
}

export interface Corpus {
  readonly bases: readonly CorpusImage[];
  readonly apps: readonly CorpusImage[];
  /** CVE → how many images (bases and apps) carry it. */
  readonly truth: ReadonlyMap<string, number>;
}

const BASE_OS_PACKAGES = 40;
const BASE_RUNTIME_PACKAGES = 5;
const APP_PACKAGES = 55;
const VERSIONS = 10;

/** mulberry32: small, fast and good enough to shape a corpus. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** An index in [0, n) with P(i) ∝ 1/(i+1)^s: a few very popular, a long tail. */
function zipf(rand: () => number, n: number, s = 1.1): (r?: number) => number {
  const cdf: number[] = [];
  let sum = 0;
  for (let i = 0; i < n; i++) cdf.push((sum += 1 / (i + 1) ** s));
  return (r = rand()) => {
    const x = r * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

interface Vuln {
  readonly id: string;
  /** Affects versions [from, to); `to` === VERSIONS means no fix yet. */
  readonly from: number;
  readonly to: number;
  readonly severity: string;
}

interface Ecosystem {
  readonly type: string;
  readonly class: 'os-pkgs' | 'lang-pkgs';
  readonly names: readonly string[];
  readonly purl: (name: string, version: string) => string;
  readonly target: string;
}

const DISTROS = [
  { family: 'alpine', release: '3.19.4', eco: 'apk' },
  { family: 'alpine', release: '3.20.3', eco: 'apk' },
  { family: 'alpine', release: '3.21.0', eco: 'apk' },
  { family: 'debian', release: '11.11', eco: 'deb' },
  { family: 'debian', release: '12.8', eco: 'deb' },
  { family: 'ubuntu', release: '22.04', eco: 'deb' },
  { family: 'ubuntu', release: '24.04', eco: 'deb' },
] as const;
const RUNTIMES = [
  { name: 'node', eco: 'npm', target: 'app/package-lock.json' },
  { name: 'python', eco: 'pypi', target: 'app/requirements.txt' },
  { name: 'openjdk', eco: 'jar', target: 'app/app.jar' },
  { name: 'golang', eco: 'gomod', target: 'app/go.mod' },
  { name: 'ruby', eco: 'gem', target: 'app/Gemfile.lock' },
] as const;
const REVISIONS = 3;
const SEVERITIES = ['CRITICAL', 'HIGH', 'HIGH', 'MEDIUM', 'MEDIUM', 'MEDIUM', 'LOW', 'LOW', 'UNKNOWN'] as const;
const TEAMS = ['payments', 'checkout', 'search', 'identity', 'platform', 'data', 'ml', 'growth', 'mobile-api', 'ops'] as const;
export const teams = TEAMS;

const version = (v: number, eco: string): string => (eco === 'apk' ? `1.${v}.0-r${v % 3}` : eco === 'deb' ? `1.${v}.0-${v % 4}+deb12u1` : `1.${v}.0`);

function ecosystems(): Record<string, Ecosystem> {
  const names = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  return {
    apk: { type: 'alpine', class: 'os-pkgs', names: names('lib-a', 300), purl: (n, v) => `pkg:apk/alpine/${n}@${v}?arch=x86_64`, target: '' },
    deb: { type: 'debian', class: 'os-pkgs', names: names('lib-d', 300), purl: (n, v) => `pkg:deb/debian/${n}@${v}?arch=amd64`, target: '' },
    npm: { type: 'npm', class: 'lang-pkgs', names: names('npm-pkg-', 2000), purl: (n, v) => `pkg:npm/${n}@${v}`, target: 'app/package-lock.json' },
    pypi: { type: 'python-pkg', class: 'lang-pkgs', names: names('py-pkg-', 1500), purl: (n, v) => `pkg:pypi/${n}@${v}`, target: 'app/requirements.txt' },
    jar: { type: 'jar', class: 'lang-pkgs', names: names('org.example.lib', 1000), purl: (n, v) => `pkg:maven/org.example/${n}@${v}`, target: 'app/app.jar' },
    gomod: {
      type: 'gobinary',
      class: 'lang-pkgs',
      names: names('example.com/mod', 800),
      purl: (n, v) => `pkg:golang/${n}@v${v}`,
      target: 'app/server',
    },
    gem: { type: 'gemspec', class: 'lang-pkgs', names: names('gem-', 600), purl: (n, v) => `pkg:gem/${n}@${v}`, target: 'app/Gemfile.lock' },
  };
}

/**
 * Builds the corpus: `apps` application images plus the 105 bases they are built on.
 * @example const c = makeCorpus(10_000); c.apps.length === 10_000
 */
export function makeCorpus(apps: number, seed = 13): Corpus {
  const rand = prng(seed);
  const ecos = ecosystems();
  // CVEs per package name: ~15% of names have 1-4, each over a range of versions.
  let cveSeq = 0;
  const vulnsOf = new Map<string, Vuln[]>();
  // Debian and Ubuntu share the `deb` names and so their CVEs; Alpine's are its own.
  for (const eco of Object.values(ecos)) {
    for (const name of eco.names) {
      if (rand() >= 0.15) continue;
      const vs: Vuln[] = [];
      const k = 1 + Math.floor(rand() * 4);
      for (let j = 0; j < k; j++) {
        const from = Math.floor(rand() * 7);
        const fixed = rand() < 0.6;
        const to = fixed ? from + 1 + Math.floor(rand() * (VERSIONS - from - 1)) : VERSIONS;
        cveSeq++;
        vs.push({
          id: `CVE-${2019 + (cveSeq % 7)}-${String(10000 + cveSeq * 7).padStart(5, '0')}`,
          from,
          to,
          severity: SEVERITIES[Math.floor(rand() * SEVERITIES.length)]!,
        });
      }
      vulnsOf.set(`${eco.type}/${name}`, vs);
    }
  }
  const truth = new Map<string, number>();

  type Pkg = { name: string; v: number; eco: Ecosystem; layer: string };
  const document = (
    repository: string,
    tag: string,
    digest: string,
    diffIds: string[],
    pkgs: Pkg[],
    labels: Record<string, string>,
    i: number,
    osRelease: string,
    osFamily: string,
  ) => {
    const configDigest = sha(`config ${digest}`);
    const results = new Map<string, { Target: string; Class: string; Type: string; Packages: unknown[]; Vulnerabilities: unknown[] }>();
    const cves = new Set<string>();
    for (const p of pkgs) {
      const target = p.eco.class === 'os-pkgs' ? `${repository}:${tag} (${osFamily} ${osRelease})` : p.eco.target;
      let r = results.get(target);
      if (r === undefined) results.set(target, (r = { Target: target, Class: p.eco.class, Type: p.eco.type, Packages: [], Vulnerabilities: [] }));
      const v = version(p.v, p.eco.type === 'alpine' ? 'apk' : p.eco.type === 'debian' ? 'deb' : 'lang');
      const purl = p.eco.purl(p.name, v);
      const id = `${p.name}@${v}`;
      r.Packages.push({
        ID: id,
        Name: p.name,
        Identifier: { PURL: purl, UID: createHash('sha1').update(purl).digest('hex').slice(0, 16) },
        Version: v,
        Licenses: ['MIT'],
        Layer: { DiffID: p.layer },
      });
      for (const vuln of vulnsOf.get(`${p.eco.type}/${p.name}`) ?? []) {
        if (p.v < vuln.from || p.v >= vuln.to) continue;
        cves.add(vuln.id);
        const fixed = vuln.to < VERSIONS ? version(vuln.to, p.eco.type === 'alpine' ? 'apk' : p.eco.type === 'debian' ? 'deb' : 'lang') : undefined;
        r.Vulnerabilities.push({
          VulnerabilityID: vuln.id,
          PkgID: id,
          PkgName: p.name,
          PkgIdentifier: { PURL: purl },
          InstalledVersion: v,
          ...(fixed === undefined ? { Status: 'affected' } : { FixedVersion: fixed, Status: 'fixed' }),
          Layer: { DiffID: p.layer },
          SeveritySource: 'nvd',
          PrimaryURL: `https://avd.aquasec.com/nvd/${vuln.id.toLowerCase()}`,
          Title: `${p.name}: a flaw in input handling (${vuln.id})`,
          Description: `A flaw was found in ${p.name} before ${fixed ?? 'any fixed version'}. A remote attacker could use it to cause a denial of service or possibly execute code.`,
          Severity: vuln.severity,
          CweIDs: ['CWE-787'],
          CVSS: { nvd: { V3Vector: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H', V3Score: 7.5 } },
        });
      }
    }
    for (const c of cves) truth.set(c, (truth.get(c) ?? 0) + 1);
    const doc = {
      SchemaVersion: 2,
      Trivy: { Version: '0.58.1' },
      // One scan time per image, a second apart: reports are idempotent per (image, scanner, time).
      CreatedAt: new Date(Date.UTC(2026, 10, 30, 10, 0, 0) + i * 1000).toISOString(),
      ArtifactName: `${repository}:${tag}`,
      ArtifactType: 'container_image',
      Metadata: {
        Size: 40_000_000 + i,
        OS: { Family: osFamily, Name: osRelease },
        ImageID: configDigest,
        DiffIDs: diffIds,
        RepoTags: [`${repository}:${tag}`],
        RepoDigests: [`${repository}@${digest}`],
        ImageConfig: { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds }, config: { Labels: labels } },
      },
      Results: [...results.values()].map((r) => (r.Vulnerabilities.length ? r : { ...r, Vulnerabilities: undefined })),
    };
    return { doc, cves: [...cves] };
  };

  // Bases: distro × runtime × revision. The OS packages are chosen per distro (shared by all its runtimes).
  const bases: (CorpusImage & { osPkgs: Pkg[]; rtPkgs: Pkg[]; diffIds: string[]; distro: number; runtime: number })[] = [];
  const osChoice = DISTROS.map((d) => {
    const eco = ecos[d.eco]!;
    const pick = new Set<number>();
    while (pick.size < BASE_OS_PACKAGES) pick.add(Math.floor(rand() * eco.names.length));
    return { eco, names: [...pick].map((n) => eco.names[n]!), v0: DISTROS.indexOf(d) % 4 };
  });
  let imageNo = 0;
  for (let d = 0; d < DISTROS.length; d++) {
    const distro = DISTROS[d]!;
    const os = osChoice[d]!;
    const osLayer = sha(`layer ${distro.family} ${distro.release}`);
    for (let rt = 0; rt < RUNTIMES.length; rt++) {
      const runtime = RUNTIMES[rt]!;
      const rtEco = ecos[runtime.eco]!;
      const rtNames = Array.from({ length: BASE_RUNTIME_PACKAGES }, (_, k) => rtEco.names[k * 7 + rt]!);
      for (let rev = 0; rev < REVISIONS; rev++) {
        const repository = `registry.example.com/base/${runtime.name}`;
        const tag = `${distro.family}${distro.release}-r${rev + 1}`;
        // A revision rebuilds both layers with newer package versions: diff IDs of its own, shared by the
        // distro's runtimes for the OS layer.
        const diffIds = [sha(`${osLayer} rev ${rev}`), sha(`layer ${runtime.name} ${distro.release} ${rev}`)];
        const osPkgs: Pkg[] = os.names.map((name, k) => ({ name, v: Math.min(VERSIONS - 1, os.v0 + (k % 5) + rev * 2), eco: os.eco, layer: diffIds[0]! }));
        const rtPkgs: Pkg[] = rtNames.map((name, k) => ({ name, v: Math.min(VERSIONS - 1, 2 + k + rev * 2), eco: rtEco, layer: diffIds[1]! }));
        const digest = sha(`manifest ${repository}:${tag}`);
        const labels = {
          'org.opencontainers.image.source': `https://github.com/example/base-${runtime.name}`,
          'org.opencontainers.image.revision': `r${rev + 1}`,
        };
        const { doc, cves } = document(repository, tag, digest, diffIds, [...osPkgs, ...rtPkgs], labels, imageNo++, distro.release, distro.family);
        bases.push({ digest, repository, tag, base: -1, doc, cves, osPkgs, rtPkgs, diffIds, distro: d, runtime: rt });
      }
    }
  }

  // Apps: a base (Zipf over distro×runtime, newer revisions likelier), then 55 packages of its ecosystem.
  const pickFamily = zipf(rand, DISTROS.length * RUNTIMES.length, 0.9);
  const pickPkg = Object.fromEntries(Object.entries(ecos).map(([k, e]) => [k, zipf(rand, e.names.length, 1.05)]));
  const out: CorpusImage[] = [];
  for (let a = 0; a < apps; a++) {
    const fam = pickFamily();
    const r = rand();
    const rev = r < 0.2 ? 0 : r < 0.5 ? 1 : 2;
    const base = bases[fam * REVISIONS + rev]!;
    const runtime = RUNTIMES[base.runtime]!;
    const eco = ecos[runtime.eco]!;
    const team = TEAMS[a % TEAMS.length]!;
    const repository = `registry.example.com/${team}/svc-${Math.floor(a / 4)}`;
    const tag = `1.${a % 4}.0`;
    const appLayer = sha(`app layer ${a}`);
    const chosen = new Set<number>(base.rtPkgs.map((p) => eco.names.indexOf(p.name)));
    const appPkgs: Pkg[] = [];
    while (appPkgs.length < APP_PACKAGES) {
      const n = pickPkg[runtime.eco]!();
      if (chosen.has(n)) continue;
      chosen.add(n);
      // Newer versions are likelier, as lock files are bumped now and then.
      appPkgs.push({ name: eco.names[n]!, v: Math.min(VERSIONS - 1, Math.floor(VERSIONS * Math.sqrt(rand()))), eco, layer: appLayer });
    }
    const digest = sha(`manifest ${repository}:${tag} ${a}`);
    const labels: Record<string, string> = { 'org.opencontainers.image.source': `https://github.com/example/${team}-svc-${Math.floor(a / 4)}`, team };
    if (a % 2 === 0) {
      labels['org.opencontainers.image.base.name'] = `${base.repository}:${base.tag}`;
      labels['org.opencontainers.image.base.digest'] = base.digest;
    }
    const { doc, cves } = document(
      repository,
      tag,
      digest,
      [...base.diffIds, appLayer],
      [...base.osPkgs, ...base.rtPkgs, ...appPkgs],
      labels,
      imageNo++,
      DISTROS[base.distro]!.release,
      DISTROS[base.distro]!.family,
    );
    out.push({ digest, repository, tag, base: fam * REVISIONS + rev, doc, cves });
  }
  return {
    bases: bases.map(({ digest, repository, tag, base, doc, cves }) => ({ digest, repository, tag, base, doc, cves })),
    apps: out,
    truth,
  };
}
