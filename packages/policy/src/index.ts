export {
  parsePolicies,
  PolicyError,
  LIMITS,
  MODES,
  PROTOCOLS,
  type Policy,
  type Rule,
  type Action,
  type Condition,
  type TokenCondition,
  type TokenType,
  TOKEN_TYPES,
  TOKEN_MAX_DEPTH,
  type Mode,
  type Protocol,
  type PolicyIssue,
} from './model.ts';
export {
  PolicyEngine,
  parseAction,
  formatAction,
  httpAction,
  checkRequestIds,
  REASONS,
  type AuthzRequest,
  type TokenContext,
  type TokenMismatch,
  tokenMismatch,
  type ActionRequest,
  type Decision,
  type Reason,
  type RuleRef,
  type EngineOptions,
} from './engine.ts';
export { parseIdPattern, parsePathPattern, normalizePath, matchSegments, SegmentTrie, type Pattern } from './pattern.ts';
export { runPolicyTests, type PolicyTestResult } from './policy-test.ts';
export { POLICY_ERROR_CODES } from './errors.ts';
