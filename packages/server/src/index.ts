export { startServer, type RunningServer, type StartOptions } from './server.ts';
export { loadServerConfig, parseListen, SERVER_DEFAULTS, type ServerConfig, type ServerFlags } from './config.ts';
export { CertificateAuthority, type CaOptions, type UpstreamCa } from './ca/ca.ts';
export { generateSigner, readPrivateKey, writePrivateKey } from './ca/keys.ts';
export { openStore, redactDbUrl } from './store/open.ts';
export { ROLES, type Role, type Store, type Entry, type EntryInput } from './store/types.ts';
export {
  createBackup,
  postgresDumpCommand,
  postgresRestoreCommand,
  readBackup,
  restoreBackup,
  SCHEMA_VERSION,
  type BackupManifest,
  type BackupOptions,
  type RestoreOptions,
} from './backup.ts';
export { parseAlertRules, ALERT_RULE_KIND, ALERT_RULE_KINDS, type AlertRule, type AlertRuleKind } from './alerts/rules.ts';
export { AlertService, type AlertsConfig } from './alerts/service.ts';
export { AuditLog, auditOrigin, MAX_AUDIT_PAGE, type AuditLogOptions } from './audit/audit-log.ts';
export { loadLogKey, logKeyPath, noteKeysOf, type LogKey } from './audit/log-key.ts';
