/**
 * The codes the agent (and the clients of a Writ server: the CLI, the SDK's sources) raise of
 * their own; the agent also passes on the server's codes it receives.
 */
export const AGENT_ERROR_CODES = [
  'ERR_REQUEST_FAILED',
  'ERR_CONFIG_INVALID',
  'ERR_INTERNAL',
  'ERR_UNAUTHENTICATED',
  'ERR_FORBIDDEN',
  'ERR_JSON_INVALID',
  'ERR_PROTOBUF_INVALID',
  'ERR_FIELD_INVALID',
  'ERR_BODY_TOO_LARGE',
] as const;
