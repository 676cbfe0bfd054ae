/**
 * Runs a guide's ```sh blocks as written, in order, in one bash, from the repository root with a
 * fresh shell's environment (a temporary HOME, the system PATH): what keeps docs/*.md true.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, cleanup, waitFor } from './helpers.ts';

export interface GuideRun {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
  /** The temporary HOME the guide ran in (removed by `finish`). */
  readonly home: string;
  /** The last lines of each file the guide was said to write (paths relative to HOME), for a failure's message. */
  logs(files: readonly string[]): string;
  /** Waits until everything the guide started has exited (its own clean-up step), then removes HOME. */
  finish(): Promise<void>;
}

const shBlocks = (markdown: string): string[] => [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);

/** The text under `## heading` up to the next `## ` heading; the whole text without a heading. */
function sectionOf(markdown: string, heading: string | undefined): string {
  if (heading === undefined) return markdown;
  const lines = markdown.split('\n');
  const start = lines.indexOf(`## ${heading}`);
  assert.ok(start >= 0, `no "## ${heading}" heading`);
  const rest = lines.slice(start + 1);
  const end = rest.findIndex((l) => l.startsWith('## '));
  return (end < 0 ? rest : rest.slice(0, end)).join('\n');
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Each block announces itself on stderr (`### block N: first line`), so a failure names the block it is in. */
export async function runGuide(
  doc: string,
  opts: {
    ports: readonly number[];
    minBlocks: number;
    timeoutMs: number;
    /** Only the blocks under this `## ` heading (up to the next one): a guide of several self-contained sections. */
    section?: string;
    /** Variables the guide says it expects (e.g. the registry a test started), beside the fresh shell's. */
    env?: Readonly<Record<string, string>>;
  },
): Promise<GuideRun> {
  const blocks = shBlocks(sectionOf(readFileSync(join(ROOT, doc), 'utf8'), opts.section));
  assert.ok(blocks.length >= opts.minBlocks, `found ${blocks.length} sh blocks in ${doc}`);
  for (const p of opts.ports) assert.ok(await portFree(p), `port ${p}, which ${doc} uses, is taken on this machine`);
  const home = mkdtempSync(join(tmpdir(), 'writ-guide-'));
  const script = ['set -e', ...blocks.map((b, i) => `echo '### block ${i + 1}: ${b.split('\n')[0]!.replace(/'/g, '')}' >&2\n${b}`)].join('\n');
  const child = spawn('bash', ['-c', script], {
    cwd: ROOT,
    env: { ...opts.env, HOME: home, PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const pgid = child.pid!;
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => process.kill(-pgid, 'SIGKILL'), opts.timeoutMs);
    child.once('exit', (c) => (clearTimeout(timer), resolve(c)));
  });
  return {
    code,
    out,
    err,
    home,
    logs: (files) =>
      files
        .map((f) => {
          try {
            return `--- ${f}\n${readFileSync(join(home, f), 'utf8').split('\n').slice(-15).join('\n')}`;
          } catch {
            return '';
          }
        })
        .join('\n'),
    finish: async () => {
      try {
        await waitFor(`the processes ${doc} started to exit`, async () => (groupAlive(pgid) ? undefined : true), 30_000);
      } finally {
        if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL');
        cleanup(home);
      }
    },
  };
}
