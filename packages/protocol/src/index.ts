export { type Json, toJson, members } from './json.ts';
export { AGENT_PATHS, DECISION_REPORT_TYPE } from './paths.ts';
export { type EntryMessage, type EntryRecord, encodeEntry, entryProblem } from './entry.ts';
export {
  MAX_SYNC_WAIT_S,
  SYNC_QUERY_PARAMS,
  type PolicyState,
  type QuarantineState,
  type SyncAnswer,
  type SyncAnswerParts,
  type SyncBundles,
  type SyncQuery,
  decodeSyncAnswer,
  decodeSyncQuery,
  encodeSyncAnswer,
  encodeSyncQuery,
  quarantineVersionNumber,
} from './sync.ts';
export {
  MAX_SVID_BATCH,
  REQUEST_FIELDS,
  SVID_REQUEST_FIELDS,
  type AttestAnswer,
  type JoinTokenAttestRequest,
  type JwtSvidAnswer,
  type JwtSvidRequest,
  type PsatAttestRequest,
  type RenewAnswer,
  type RenewRequest,
  type SignedSvid,
  type SvidBatchAnswer,
  type SvidBatchRequest,
  decodeAttestAnswer,
  decodeJwtSvidAnswer,
  decodeRenewAnswer,
  decodeSvidBatchAnswer,
} from './svid.ts';
export {
  IMAGE_DIGEST,
  type AdmittedImagesState,
  type AdmittedImagesVersion,
  admittedImagesProblem,
  checkImageDigest,
  formatImagesVersion,
  imageDigestsOf,
  parseImagesVersion,
} from './admitted-images.ts';
export {
  WORKLOAD_FIELDS,
  WORKLOAD_LIMITS,
  type WorkloadReport,
  type WorkloadsMessage,
  decodeWorkloads,
  encodeWorkloads,
  hasControlChar,
  imageOf,
} from './workloads.ts';
export { MIN_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION, parseProtocolVersion } from './version.ts';
