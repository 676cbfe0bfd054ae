/** The agent's on-disk state: identity, entries, SVIDs and their keys, the last good policy, so a restart serves at once. */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BundleJson } from '@writ/spiffe';
import type { EntryMessage, QuarantineState } from '@writ/protocol';

export interface StoredSvid {
  readonly chainPem: string;
  readonly keyPem: string;
  readonly notBefore: number;
  readonly expiresAt: number;
  readonly rotateAt: number;
}

export interface AgentState {
  spiffeId: string;
  svidPem: string;
  keyPem: string;
  /** SHA-256 (hex) of the join token this identity was attested with: a different token given later is a new one to attest with. */
  joinTokenSha256?: string;
  revision: number;
  bundlesVersion: string;
  bundle: BundleJson | undefined;
  federated: Record<string, BundleJson>;
  entries: Record<string, EntryMessage>;
  svids: Record<string, StoredSvid>;
  /** The last good policy set (name -> YAML) and its revision: enforced while the server is away. */
  policyRevision?: number;
  policies?: Record<string, string>;
  quarantine?: QuarantineState;
  /** Image digests admitted under an enforce admission policy, at the server's `version` of the set. */
  admittedImages?: { version: string; digests: string[] };
  /** The server requires an admitted image for every entry (its `--require-admitted-image`). */
  requireAdmittedImage?: boolean;
}

const STATE_FILE = 'agent-state.json';

/** `DATA_DIR/agent-state.json`, mode 0600, replaced atomically (a crash never leaves half a file). */
export class StateFile {
  readonly #dir: string;

  constructor(dataDir: string) {
    this.#dir = dataDir;
  }

  /** The saved state, undefined when there is none; throws when it is unreadable. */
  load(): AgentState | undefined {
    const f = join(this.#dir, STATE_FILE);
    if (!existsSync(f)) return undefined;
    return JSON.parse(readFileSync(f, 'utf8')) as AgentState;
  }

  save(state: AgentState): void {
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    const f = join(this.#dir, STATE_FILE);
    const tmp = `${f}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, f);
  }
}
