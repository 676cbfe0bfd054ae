export { TRANSPARENCY_ERROR_CODES, TransparencyError, type TransparencyErrorCode } from './errors.ts';
export { CompactRange, HASH_SIZE, emptyRoot, leafHash, nodeHash, rootOf } from './merkle.ts';
export {
  assembleProof,
  batchReader,
  compactRangeNodes,
  consistencyPlan,
  consistencyProof,
  inclusionPlan,
  inclusionProof,
  verifyConsistency,
  verifyInclusion,
  type NodeBatchReader,
  type NodeId,
  type NodeReader,
  type ProofPlan,
} from './proof.ts';
export { MAX_CHECKPOINT_BYTES, MAX_CHECKPOINT_EXTENSIONS, formatCheckpoint, parseCheckpoint, type Checkpoint } from './checkpoint.ts';
export {
  MAX_NOTE_BYTES,
  MAX_NOTE_SIGNATURES,
  generateNoteKey,
  isValidKeyName,
  noteKeyHash,
  noteSigner,
  noteVerifier,
  openNote,
  signNote,
  type NoteSigner,
  type NoteVerifier,
} from './note.ts';
export {
  AUDIT_LEAF_VERSION,
  AuditLeafHasher,
  decodeAuditLeaf,
  encodeAuditLeaf,
  verifyEntries,
  type AuditLeaf,
  type TrustedHead,
  type VerifyEntriesOptions,
  type VerifyEntriesResult,
} from './audit-leaf.ts';
export {
  AUDIT_PAGE_MEDIA_TYPE,
  AuditPageWriter,
  MAX_AUDIT_BODY_BYTES,
  MAX_AUDIT_PAGE_BYTES,
  decodeAuditPage,
  encodeAuditPage,
  type AuditPage,
  type AuditPageEntry,
} from './audit-page.ts';
