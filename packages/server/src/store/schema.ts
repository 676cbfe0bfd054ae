/**
 * Schema migrations. The DDL is portable between SQLite and PostgreSQL on purpose: times are
 * epoch milliseconds in BIGINT, lists are JSON in TEXT, flags are INTEGER 0/1. Two words differ:
 * `{INT64_PRIMARY_KEY}` is `INTEGER PRIMARY KEY` in SQLite (the rowid itself, 64-bit) and
 * `BIGINT PRIMARY KEY` in PostgreSQL (where INTEGER is 32-bit). `postgres` statements run on
 * PostgreSQL only, after the portable ones (what only several processes need: notification triggers).
 * `{WITHOUT_ROWID}` is ` WITHOUT ROWID` in SQLite (a table stored in its key's order), nothing in PostgreSQL.
 */
/** The notification topic of an agent's renewal (migration 30): not a store change kind, so older servers ignore it. */
export const AGENT_RENEWED_TOPIC = 'agent-renewed';

export const MIGRATIONS: ReadonlyArray<{ version: number; statements: readonly string[]; postgres?: readonly string[] }> = [
  {
    version: 1,
    statements: [
      `CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)`,
      `INSERT INTO counters (name, value) VALUES ('entry_revision', 0), ('bundle_sequence', 0)`,
      `CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        selectors TEXT NOT NULL,
        selectors_key TEXT NOT NULL,
        x509_svid_ttl INTEGER NOT NULL,
        jwt_svid_ttl INTEGER NOT NULL,
        dns_names TEXT NOT NULL,
        federates_with TEXT NOT NULL,
        admin INTEGER NOT NULL,
        hint TEXT NOT NULL,
        expires_at BIGINT,
        revision BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, selectors_key)`,
      `CREATE INDEX entries_parent ON entries (parent_id, id)`,
      `CREATE INDEX entries_revision ON entries (revision)`,
      `CREATE TABLE entry_selectors (entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE, selector TEXT NOT NULL, PRIMARY KEY (selector, entry_id))`,
      `CREATE INDEX entry_selectors_entry ON entry_selectors (entry_id)`,
      `CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, node_name TEXT NOT NULL, expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL, used_at BIGINT)`,
      `CREATE TABLE admin_tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT)`,
      `CREATE TABLE agents (
        spiffe_id TEXT PRIMARY KEY, node_name TEXT NOT NULL, attestation_type TEXT NOT NULL, selectors TEXT NOT NULL,
        serial TEXT NOT NULL, expires_at BIGINT NOT NULL, banned INTEGER NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL
      )`,
      `CREATE TABLE authorities (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, server_id TEXT NOT NULL, status TEXT NOT NULL,
        public_data TEXT NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL
      )`,
      `CREATE TABLE federated_bundles (trust_domain TEXT PRIMARY KEY, bundle TEXT NOT NULL, updated_at BIGINT NOT NULL)`,
    ],
  },
  {
    // Agent sync is incremental by revision: a deleted entry (or one moved to another parent)
    // leaves a tombstone for its old parent at the revision of the change.
    version: 2,
    statements: [
      `CREATE TABLE entry_tombstones (entry_id TEXT NOT NULL, parent_id TEXT NOT NULL, revision BIGINT NOT NULL)`,
      `CREATE INDEX entry_tombstones_parent ON entry_tombstones (parent_id, revision)`,
    ],
  },
  {
    // Every policy apply is a revision holding the whole set (name -> YAML source), so history,
    // diff and rollback are reads and copies.
    version: 3,
    statements: [
      `CREATE TABLE policy_revisions (revision BIGINT PRIMARY KEY, created_at BIGINT NOT NULL, created_by TEXT NOT NULL, comment TEXT NOT NULL, policies TEXT NOT NULL)`,
    ],
  },
  {
    // Quarantine, and which policy revision each agent says it enforces.
    version: 4,
    statements: [
      `CREATE TABLE quarantine (spiffe_id TEXT PRIMARY KEY, reason TEXT NOT NULL, created_by TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT)`,
      `ALTER TABLE agents ADD COLUMN policy_revision BIGINT NOT NULL DEFAULT 0`,
      `ALTER TABLE agents ADD COLUMN policy_acked_at BIGINT NOT NULL DEFAULT 0`,
    ],
  },
  {
    version: 5,
    statements: [
      `CREATE TABLE decisions (
        id TEXT PRIMARY KEY, at BIGINT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL, action TEXT NOT NULL,
        decision TEXT NOT NULL, reason TEXT NOT NULL, policy_revision BIGINT NOT NULL, rule TEXT NOT NULL, reporter TEXT NOT NULL
      )`,
      `CREATE INDEX decisions_at ON decisions (at)`,
    ],
  },
  {
    // Edges (caller, callee, action) seen in the decision log, with when and how often: what a
    // dry-run replays (all of the day's edges, not only the latest decisions) and a service graph.
    version: 6,
    statements: [
      `CREATE TABLE decision_edges (
        from_id TEXT NOT NULL, to_id TEXT NOT NULL, action TEXT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, seen BIGINT NOT NULL,
        PRIMARY KEY (from_id, to_id, action)
      )`,
      `CREATE INDEX decision_edges_last_seen ON decision_edges (last_seen)`,
      `INSERT INTO decision_edges (from_id, to_id, action, first_seen, last_seen, seen)
        SELECT from_id, to_id, action, MIN(at), MAX(at), COUNT(*) FROM decisions GROUP BY from_id, to_id, action`,
    ],
  },
  {
    // The order decisions reached the store, for followers (`writ decisions tail`): a decision's
    // own time says when it was made, and reporters deliver late by their flush intervals (or by an
    // outage), so following by time would skip what arrives after a newer one. The arrival number
    // is the table's key (SQLite's rowid: no index more than before).
    version: 7,
    statements: [
      `CREATE TABLE decisions_v7 (
        seq {INT64_PRIMARY_KEY}, id TEXT NOT NULL UNIQUE, at BIGINT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL, action TEXT NOT NULL,
        decision TEXT NOT NULL, reason TEXT NOT NULL, policy_revision BIGINT NOT NULL, rule TEXT NOT NULL, reporter TEXT NOT NULL
      )`,
      `INSERT INTO decisions_v7 (seq, id, at, from_id, to_id, action, decision, reason, policy_revision, rule, reporter)
        SELECT ROW_NUMBER() OVER (ORDER BY at, id), id, at, from_id, to_id, action, decision, reason, policy_revision, rule, reporter FROM decisions`,
      `DROP TABLE decisions`,
      `ALTER TABLE decisions_v7 RENAME TO decisions`,
      `CREATE INDEX decisions_at ON decisions (at)`,
      `INSERT INTO counters (name, value) SELECT 'decision_seq', COUNT(*) FROM decisions`,
    ],
  },
  {
    // The quarantine version each agent last reported on sync, beside its policy revision: what
    // `writ quarantine add --wait` waits on. The version grows with every quarantine write (see
    // SqlStore.quarantineVersion), so "at or past the version I waited for" is a comparison.
    version: 8,
    statements: [
      `ALTER TABLE agents ADD COLUMN quarantine_version BIGINT NOT NULL DEFAULT 0`,
      `INSERT INTO counters (name, value) VALUES ('quarantine_writes', 0)`,
    ],
  },
  // ---- migration 9 (admission events, engineer E) ----
  {
    // Every admission verdict of the webhook, numbered on arrival (a follower's cursor, like
    // decisions); lists (images, controls, exceptions, policies) are JSON. Pruned with the decisions.
    version: 9,
    statements: [
      `CREATE TABLE admission_events (
        seq {INT64_PRIMARY_KEY}, id TEXT NOT NULL UNIQUE, at BIGINT NOT NULL, uid TEXT NOT NULL, operation TEXT NOT NULL,
        namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, sub_resource TEXT NOT NULL, hook TEXT NOT NULL,
        allowed INTEGER NOT NULL, mode TEXT NOT NULL, dry_run INTEGER NOT NULL, message TEXT NOT NULL,
        images TEXT NOT NULL, controls TEXT NOT NULL, exceptions TEXT NOT NULL, policies TEXT NOT NULL
      )`,
      `CREATE INDEX admission_events_at ON admission_events (at)`,
      `CREATE INDEX admission_events_namespace ON admission_events (namespace, at)`,
      `INSERT INTO counters (name, value) VALUES ('admission_event_seq', 0)`,
    ],
  },
  // ---- end of migration 9 ----
  {
    // Identity follows image trust: an entry may require an admitted image, and the image digests
    // admitted under an enforce policy are kept (first and last seen) with an arrival number, so
    // agents follow the set incrementally. The epoch changes when digests are pruned: an agent
    // at an older epoch gets the whole set again.
    version: 10,
    statements: [
      `ALTER TABLE entries ADD COLUMN require_admitted_image INTEGER NOT NULL DEFAULT 0`,
      `CREATE TABLE admitted_images (digest TEXT PRIMARY KEY, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, seq BIGINT NOT NULL)`,
      `CREATE INDEX admitted_images_seq ON admitted_images (seq)`,
      `INSERT INTO counters (name, value) VALUES ('admitted_image_seq', 0), ('admitted_image_epoch', 1)`,
    ],
  },
  {
    // The image inventory (issue 13): one row per manifest digest, lists and maps as JSON; scanner
    // reports, one per (image, scanner, scan key: the scan time, or the document's hash when it
    // has none), with their packages and findings in rows of their own (findings by vulnerability
    // ID and packages by name are what the answers look up).
    version: 11,
    statements: [
      `CREATE TABLE images (
        digest TEXT PRIMARY KEY, config_digest TEXT, index_digest TEXT, platform TEXT, names TEXT NOT NULL, tags TEXT NOT NULL,
        layers TEXT NOT NULL, annotations TEXT NOT NULL, labels TEXT NOT NULL, created BIGINT, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL
      )`,
      `CREATE TABLE reports (
        id TEXT PRIMARY KEY, image_digest TEXT NOT NULL, scanner TEXT NOT NULL, scanner_version TEXT, format TEXT NOT NULL,
        format_version TEXT, scan_key TEXT NOT NULL, scanned_at BIGINT, ingested_at BIGINT NOT NULL,
        package_count INTEGER NOT NULL, finding_count INTEGER NOT NULL, UNIQUE (image_digest, scanner, scan_key)
      )`,
      `CREATE TABLE report_packages (
        report_id TEXT NOT NULL, idx INTEGER NOT NULL, ref TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, type TEXT NOT NULL,
        purl TEXT, layer TEXT, PRIMARY KEY (report_id, idx)
      )`,
      `CREATE INDEX report_packages_name ON report_packages (name)`,
      `CREATE TABLE report_findings (
        report_id TEXT NOT NULL, idx INTEGER NOT NULL, vuln_id TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL,
        installed TEXT NOT NULL, fixed TEXT, package_ref TEXT NOT NULL, PRIMARY KEY (report_id, idx)
      )`,
      `CREATE INDEX report_findings_vuln ON report_findings (vuln_id)`,
    ],
  },
  {
    // What runs where (issue 13): the workloads each agent reports, kept after they end (ended_at)
    // for the decision retention so a rollout can tell which identities once ran an affected
    // digest. "Running now" is ended_at IS NULL and last_seen within a minute.
    version: 12,
    statements: [
      `CREATE TABLE workloads (
        agent_id TEXT NOT NULL, wkey TEXT NOT NULL, node TEXT, spiffe_ids TEXT NOT NULL, container_id TEXT, container_name TEXT,
        pod_uid TEXT, pod_name TEXT, namespace TEXT, pod_owner TEXT, image_digest TEXT, image_name TEXT, labels TEXT NOT NULL,
        annotations TEXT NOT NULL, owner TEXT, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, ended_at BIGINT,
        PRIMARY KEY (agent_id, wkey)
      )`,
      `CREATE INDEX workloads_image ON workloads (image_digest)`,
      `CREATE INDEX workloads_last_seen ON workloads (last_seen)`,
      `ALTER TABLE entries ADD COLUMN owner TEXT`,
    ],
  },
  {
    // What the answers need fast (issue 13): only the latest report per (image, scanner) counts
    // (`latest`); every ID a finding is filed under, its own and its aliases (`finding_ids`: a CVE
    // asked for finds the GHSA that names it); each image's parent (lineage.ts's answer, kept on the
    // image and recomputed for its children), found by its annotated base (`base_ref`) or by the
    // chain IDs of its layer prefixes (`image_prefixes`); images by repository for newer bases.
    version: 13,
    statements: [
      `ALTER TABLE reports ADD COLUMN latest INTEGER NOT NULL DEFAULT 0`,
      `UPDATE reports SET latest = 1 WHERE id = (SELECT r2.id FROM reports r2 WHERE r2.image_digest = reports.image_digest AND r2.scanner = reports.scanner
        ORDER BY CASE WHEN r2.scanned_at IS NULL THEN 1 ELSE 0 END, r2.scanned_at DESC, r2.ingested_at DESC, r2.id DESC LIMIT 1)`,
      // One latest report per (image, scanner), also between racing writers (the loser retries).
      `CREATE UNIQUE INDEX reports_latest ON reports (image_digest, scanner) WHERE latest = 1`,
      // An SBOM (SPDX, CycloneDX without vulnerabilities) is latest only while its scanner has no
      // vulnerability report of the image: otherwise it would hide that report's findings.
      `ALTER TABLE reports ADD COLUMN vuln_data INTEGER NOT NULL DEFAULT 1`,
      `UPDATE reports SET vuln_data = 0 WHERE format = 'spdx' OR (format = 'cyclonedx' AND finding_count = 0)`,
      `ALTER TABLE report_findings ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]'`,
      `CREATE TABLE finding_ids (vuln_id TEXT NOT NULL, report_id TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (vuln_id, report_id, idx))`,
      `INSERT INTO finding_ids (vuln_id, report_id, idx) SELECT DISTINCT vuln_id, report_id, idx FROM report_findings`,
      `CREATE INDEX report_packages_ref ON report_packages (report_id, ref)`,
      `ALTER TABLE images ADD COLUMN chain_id TEXT`,
      `ALTER TABLE images ADD COLUMN base_ref TEXT`,
      `ALTER TABLE images ADD COLUMN parent_digest TEXT`,
      `ALTER TABLE images ADD COLUMN parent_name TEXT`,
      `ALTER TABLE images ADD COLUMN parent_source TEXT`,
      `ALTER TABLE images ADD COLUMN base_layers INTEGER`,
      `CREATE INDEX images_index_digest ON images (index_digest)`,
      `CREATE INDEX images_parent ON images (parent_digest)`,
      `CREATE INDEX images_base_ref ON images (base_ref)`,
      `CREATE TABLE image_prefixes (chain_id TEXT NOT NULL, digest TEXT NOT NULL, depth INTEGER NOT NULL, PRIMARY KEY (chain_id, digest))`,
      // Without these two every stored image scanned both tables (ingest slowed as the inventory grew);
      // the two dropped are read by no query since finding_ids (bench vuln: ingest 161 -> 330/s on SQLite).
      `CREATE INDEX image_prefixes_digest ON image_prefixes (digest)`,
      `CREATE INDEX images_chain ON images (chain_id)`,
      `DROP INDEX report_packages_name`,
      `DROP INDEX report_findings_vuln`,
      `CREATE TABLE image_repos (repo TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo, digest))`,
    ],
  },
  {
    // OpenVEX documents (issue 13, section 5): one row per document `@id` (the latest version
    // ingested) and its statements, products (with their subcomponents) as JSON. A newer version
    // of a document replaces its statements; statements are looked up by vulnerability ID and
    // by alias (aliases as JSON, matched in code: few statements per vulnerability).
    version: 14,
    statements: [
      `CREATE TABLE vex_documents (
        id TEXT PRIMARY KEY, author TEXT NOT NULL, role TEXT, version BIGINT NOT NULL, issued_at BIGINT, content_hash TEXT NOT NULL,
        statement_count INTEGER NOT NULL, ingested_at BIGINT NOT NULL
      )`,
      `CREATE TABLE vex_statements (
        document_id TEXT NOT NULL, idx INTEGER NOT NULL, vuln_id TEXT NOT NULL, aliases TEXT NOT NULL, products TEXT NOT NULL,
        status TEXT NOT NULL, justification TEXT, impact_statement TEXT, action_statement TEXT, stated_at BIGINT,
        PRIMARY KEY (document_id, idx)
      )`,
      `CREATE INDEX vex_statements_vuln ON vex_statements (vuln_id)`,
    ],
  },
  {
    // Vulnerability events (issue 13, section 6): the (vulnerability, digest, identity) triples
    // affected now, so that each fires one event while it stays affected, and the events themselves
    // in arrival order (a follower's cursor).
    version: 15,
    statements: [
      `CREATE TABLE vuln_exposures (
        vuln_id TEXT NOT NULL, image_digest TEXT NOT NULL, spiffe_id TEXT NOT NULL, since BIGINT NOT NULL,
        PRIMARY KEY (vuln_id, image_digest, spiffe_id)
      )`,
      `CREATE TABLE vuln_events (
        seq {INT64_PRIMARY_KEY}, id TEXT NOT NULL UNIQUE, at BIGINT NOT NULL, cause TEXT NOT NULL, vuln_id TEXT NOT NULL, severity TEXT NOT NULL,
        image_digest TEXT NOT NULL, spiffe_id TEXT NOT NULL, owner TEXT, node TEXT, namespace TEXT, pod TEXT
      )`,
      `CREATE INDEX vuln_events_at ON vuln_events (at)`,
      `INSERT INTO counters (name, value) VALUES ('vuln_event_seq', 0)`,
    ],
  },
  {
    // Federation relationships (issue 14, section 2): where each peer's bundle is fetched from and
    // how the last fetch went. The fetched bundle itself goes into federated_bundles, as before.
    version: 16,
    statements: [
      `CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY, bundle_endpoint_url TEXT NOT NULL, profile TEXT NOT NULL, endpoint_spiffe_id TEXT,
        created_at BIGINT NOT NULL, last_success_at BIGINT, last_error TEXT, last_error_code TEXT, last_error_at BIGINT,
        sequence BIGINT, refresh_hint BIGINT, next_refresh_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    // `affected` counts the running workloads of every affected image per owner from the index
    // alone (affected-profile, SQLite, 2,012 images / 19,820 workloads: 74 -> 19 ms).
    // workloads_image stays for the lookups by image_digest alone.
    version: 17,
    statements: [`CREATE INDEX workloads_image_running ON workloads (image_digest, ended_at, last_seen, owner)`],
  },
  {
    // Learning mode (issue 15, section 2): the (caller, action) edges observed into a destination
    // while it learned (decisions with reason LEARNING), counted as they arrive like decision_edges,
    // what `writ policy propose` builds a policy from. Cleared when the destination learns anew.
    version: 18,
    statements: [
      `CREATE TABLE learned_edges (
        to_id TEXT NOT NULL, from_id TEXT NOT NULL, action TEXT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, seen BIGINT NOT NULL,
        PRIMARY KEY (to_id, from_id, action)
      )`,
      `CREATE INDEX learned_edges_last_seen ON learned_edges (last_seen)`,
    ],
  },
  {
    // `affected` over 10,000 images in one range scan each (issue 13's p99 <= 100 ms): the images whose
    // latest report carries each ID (`vuln_images`, kept by putReport as `latest` moves), and the
    // workloads not ended per (image digest, owner) (`workload_counts`, kept by putAgentWorkloads and
    // pruneWorkloads; `owner_key` is '=' || owner, '' for none, since NULLs never meet in a key). A
    // workload not ended but silent for a minute is no longer running: those are subtracted at query
    // time, found per digest in workloads_image_running (an index of the silent ones by last_seen
    // cost every heartbeat 40% more: each one moves its entry).
    version: 19,
    statements: [
      `CREATE TABLE vuln_images (vuln_id TEXT NOT NULL, image_digest TEXT NOT NULL, report_id TEXT NOT NULL, PRIMARY KEY (vuln_id, image_digest, report_id))`,
      `CREATE INDEX vuln_images_report ON vuln_images (report_id)`,
      `INSERT INTO vuln_images (vuln_id, image_digest, report_id)
        SELECT DISTINCT fi.vuln_id, r.image_digest, r.id FROM finding_ids fi JOIN reports r ON r.id = fi.report_id
        JOIN report_findings f ON f.report_id = fi.report_id AND f.idx = fi.idx
        WHERE r.latest = 1 AND f.status IN ('affected', 'under_investigation', 'unknown')`,
      `CREATE TABLE workload_counts (image_digest TEXT NOT NULL, owner_key TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (image_digest, owner_key))`,
      `INSERT INTO workload_counts (image_digest, owner_key, n)
        SELECT image_digest, COALESCE('=' || owner, ''), COUNT(*) FROM workloads WHERE ended_at IS NULL AND image_digest IS NOT NULL
        GROUP BY image_digest, COALESCE('=' || owner, '')`,
      // The repositories of an image (its bases' newer versions are looked up by them).
      `CREATE INDEX image_repos_digest ON image_repos (digest, repo)`,
    ],
  },
  {
    // The audit log (issue 15, section 1): a verifiable log, RFC 9162 Merkle tree. Every control-plane
    // write appends its leaf in its own transaction. audit_leaves keeps each leaf's exact bytes (body,
    // JSON text) and hash; audit_nodes the tree: every completed perfect subtree, leaves (level 0)
    // included, so a proof needs O(log n) reads and none of the entry rows; audit_head the one row appends serialise on (size, compact range, last leaf
    // hash for the chained encoding); audit_checkpoints the signed notes served. Hashes are hex.
    version: 20,
    statements: [
      `CREATE TABLE audit_leaves (
        leaf_index {INT64_PRIMARY_KEY}, at BIGINT NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
        body TEXT NOT NULL, leaf_hash TEXT NOT NULL
      )`,
      // A node's key is its in-order position in the tree, index * 2^(level+1) + 2^level - 1: one
      // integer (SQLite's rowid), and new nodes land at the right end of the b-tree.
      `CREATE TABLE audit_nodes (node_id {INT64_PRIMARY_KEY}, hash TEXT NOT NULL)`,
      `CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, hashes TEXT NOT NULL, last_leaf TEXT NOT NULL)`,
      `INSERT INTO audit_head (id, size, hashes, last_leaf) VALUES (1, 0, '', '')`,
      `CREATE TABLE audit_checkpoints (size {INT64_PRIMARY_KEY}, note TEXT NOT NULL, at BIGINT NOT NULL)`,
    ],
  },
  {
    // Alerts (issue 15, section 3): one row per (rule, key) occurrence run, repeats within the
    // rule's window counted into it; `response` is what an automatic quarantine did (JSON).
    version: 21,
    statements: [
      `CREATE TABLE alerts (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, dedupe_key TEXT NOT NULL,
        first_at BIGINT NOT NULL, last_at BIGINT NOT NULL, count BIGINT NOT NULL, state TEXT NOT NULL,
        acked_by TEXT, acked_at BIGINT, details TEXT NOT NULL, response TEXT
      )`,
      `CREATE INDEX alerts_rule_key ON alerts (rule, dedupe_key, last_at)`,
      `CREATE INDEX alerts_last_at ON alerts (last_at)`,
      // `new-identity` asks whether an identity was ever called: the primary key serves callers only.
      `CREATE INDEX decision_edges_to ON decision_edges (to_id)`,
    ],
  },
  {
    // Dashboard sessions (issue 15, section 4): the cookie's random id and its CSRF value, hashed;
    // the token signed in with gives the role, so revoking the token ends its sessions.
    version: 22,
    statements: [
      `CREATE TABLE ui_sessions (
        id_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL, csrf_hash TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL
      )`,
      `CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at)`,
    ],
  },
  {
    // Several replicas (issue 16): run-once jobs under a lease (leases.ts), and a NOTIFY on
    // `writ_changes` from every write other replicas' change hubs and caches must hear of, sent
    // by triggers inside the writing transaction (so delivered on commit only, and no write path,
    // however it reaches the table, can forget it). Statement triggers: a batch of 10,000 entries
    // is one notification. Agents: only a deletion or a ban is news (the hub's `revoked`); renewals
    // and acknowledgements rewrite agent rows all the time and notify nobody.
    version: 23,
    statements: [`CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)`],
    postgres: [
      `CREATE FUNCTION writ_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('writ_changes', TG_ARGV[0] || '|' || current_schema() || '|' || current_setting('application_name') || '|');
        RETURN NULL;
      END $$`,
      `CREATE TRIGGER writ_notify_entries AFTER INSERT OR UPDATE OR DELETE ON entries FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('entries')`,
      `CREATE TRIGGER writ_notify_authorities AFTER INSERT OR UPDATE OR DELETE ON authorities FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('authorities')`,
      `CREATE TRIGGER writ_notify_policy_revisions AFTER INSERT OR UPDATE OR DELETE ON policy_revisions FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('policies')`,
      `CREATE TRIGGER writ_notify_quarantine AFTER INSERT OR UPDATE OR DELETE ON quarantine FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('quarantine')`,
      `CREATE TRIGGER writ_notify_federated_bundles AFTER INSERT OR UPDATE OR DELETE ON federated_bundles FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('federated-bundles')`,
      `CREATE TRIGGER writ_notify_federation_relationships AFTER INSERT OR UPDATE OR DELETE ON federation_relationships FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('federation')`,
      `CREATE TRIGGER writ_notify_admitted_images AFTER INSERT OR UPDATE OR DELETE ON admitted_images FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('admitted-images')`,
      `CREATE TRIGGER writ_notify_reports AFTER INSERT OR UPDATE OR DELETE ON reports FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('reports')`,
      `CREATE TRIGGER writ_notify_workloads AFTER INSERT OR UPDATE OR DELETE ON workloads FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('workloads')`,
      `CREATE TRIGGER writ_notify_vex_documents AFTER INSERT OR UPDATE OR DELETE ON vex_documents FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('vex')`,
      `CREATE FUNCTION writ_notify_agent_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('writ_changes', 'agents|' || current_schema() || '|' || current_setting('application_name') || '|' || OLD.spiffe_id);
        RETURN NULL;
      END $$`,
      `CREATE TRIGGER writ_notify_agents_deleted AFTER DELETE ON agents FOR EACH ROW EXECUTE FUNCTION writ_notify_agent_revoked()`,
      `CREATE TRIGGER writ_notify_agents_banned AFTER UPDATE ON agents FOR EACH ROW WHEN (NEW.banned <> OLD.banned) EXECUTE FUNCTION writ_notify_agent_revoked()`,
    ],
  },
  {
    // Entry notifications name the agents whose entries changed (old and new parents), so that
    // another replica wakes those agents' long polls, not all of them. Still one per statement,
    // from its transition tables; with too many parents for NOTIFY's 8,000-byte payload it names
    // none, and every poll wakes.
    version: 24,
    statements: [],
    postgres: [
      `DROP TRIGGER writ_notify_entries ON entries`,
      `CREATE FUNCTION writ_notify_entries() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE parents TEXT;
      BEGIN
        IF TG_OP = 'INSERT' THEN
          SELECT string_agg(DISTINCT parent_id, ',') INTO parents FROM new_rows;
        ELSIF TG_OP = 'UPDATE' THEN
          SELECT string_agg(DISTINCT parent_id, ',') INTO parents FROM (SELECT parent_id FROM old_rows UNION SELECT parent_id FROM new_rows) p;
        ELSE
          SELECT string_agg(DISTINCT parent_id, ',') INTO parents FROM old_rows;
        END IF;
        IF parents IS NULL THEN RETURN NULL; END IF;
        IF length(parents) > 7000 THEN parents := ''; END IF;
        PERFORM pg_notify('writ_changes', 'entries|' || current_schema() || '|' || current_setting('application_name') || '|' || parents);
        RETURN NULL;
      END $$`,
      `CREATE TRIGGER writ_notify_entries_insert AFTER INSERT ON entries REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_entries()`,
      `CREATE TRIGGER writ_notify_entries_update AFTER UPDATE ON entries REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_entries()`,
      `CREATE TRIGGER writ_notify_entries_delete AFTER DELETE ON entries REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_entries()`,
    ],
  },
  {
    // Audit leaves queued by the writes (issue 15, section 1): a write's transaction inserts its
    // leaf bodies here, under no lock shared with other writers, and the folder (audit-sql.ts,
    // `foldAudit`) moves the committed ones into audit_leaves and audit_nodes under the head row's
    // lock, in `seq` order, in a short transaction of its own. SQLite numbers `seq` as its rowid;
    // PostgreSQL from an identity sequence.
    version: 25,
    statements: [
      `CREATE TABLE audit_pending (
        seq {INT64_PRIMARY_KEY}, at BIGINT NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL
      )`,
    ],
    postgres: [`ALTER TABLE audit_pending ALTER COLUMN seq ADD GENERATED BY DEFAULT AS IDENTITY`],
  },
  {
    // The vulnerability events' evaluation is skipped while nothing it reads changed (vuln-events.ts):
    // another replica's image writes must be heard too. Only what the evaluation reads is news (a new
    // image, its names, tags or index digest), not the last-seen time every admission rewrites; a
    // notification repeated in one transaction is delivered once.
    version: 27,
    statements: [],
    postgres: [
      `CREATE TRIGGER writ_notify_images_insert AFTER INSERT OR DELETE ON images FOR EACH STATEMENT EXECUTE FUNCTION writ_notify_change('images')`,
      `CREATE TRIGGER writ_notify_images_update AFTER UPDATE ON images FOR EACH ROW
        WHEN (OLD.names IS DISTINCT FROM NEW.names OR OLD.tags IS DISTINCT FROM NEW.tags OR OLD.index_digest IS DISTINCT FROM NEW.index_digest)
        EXECUTE FUNCTION writ_notify_change('images')`,
    ],
  },
  // ---- migration 28 (the service graph's counts, issue 15 section 4) ----
  {
    // The service graph's counts, kept as decisions arrive (SqlStore.addDecisions): per (caller,
    // destination, action, rule) and minute, and again per hour, the allow / deny / would-deny
    // decisions. A graph over a window reads the hours inside it and the minutes of its first
    // partial hour, in key order, instead of grouping every decision of the window per request.
    // Pruned with the decisions. In SQLite without a rowid: the rows are stored in key order.
    version: 28,
    statements: [
      `CREATE TABLE graph_counts (
        span BIGINT NOT NULL, bucket BIGINT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL, action TEXT NOT NULL, rule TEXT NOT NULL,
        allow BIGINT NOT NULL, deny BIGINT NOT NULL, would_deny BIGINT NOT NULL, last_seen BIGINT NOT NULL,
        PRIMARY KEY (span, bucket, from_id, to_id, action, rule)
      ){WITHOUT_ROWID}`,
      ...[60_000, 3_600_000].map(
        (span) => `INSERT INTO graph_counts (span, bucket, from_id, to_id, action, rule, allow, deny, would_deny, last_seen)
        SELECT ${span}, (at / ${span}) * ${span}, from_id, to_id, action, rule,
          SUM(CASE WHEN decision = 'allow' THEN 1 ELSE 0 END), SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END),
          SUM(CASE WHEN decision = 'audit-would-deny' THEN 1 ELSE 0 END), MAX(at)
        FROM decisions GROUP BY (at / ${span}) * ${span}, from_id, to_id, action, rule`,
      ),
    ],
  },
  {
    // A renewal names its agent to the other replicas (topic AGENT_RENEWED_TOPIC), so that each can
    // keep the agents' records it authenticates with in memory (attest/authenticate.ts) and still
    // refuse a superseded SVID. Acknowledgements rewrite other columns and still notify nobody.
    version: 30,
    statements: [],
    postgres: [
      `CREATE FUNCTION writ_notify_agent_renewed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('writ_changes', '${AGENT_RENEWED_TOPIC}|' || current_schema() || '|' || current_setting('application_name') || '|' || NEW.spiffe_id);
        RETURN NULL;
      END $$`,
      `CREATE TRIGGER writ_notify_agents_renewed AFTER UPDATE ON agents FOR EACH ROW
        WHEN (NEW.serial IS DISTINCT FROM OLD.serial AND NEW.banned = OLD.banned) EXECUTE FUNCTION writ_notify_agent_renewed()`,
    ],
  },
];
