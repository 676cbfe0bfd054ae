/** The codes `writ proxy` answers with (the JSON bodies of its own HTTP answers) or fails with. */
export const PROXY_ERROR_CODES = [
  'ERR_BAD_REQUEST',
  'ERR_PATH_INVALID',
  'ERR_BODY_INCOMPLETE',
  'ERR_FORBIDDEN',
  'ERR_METHOD_NOT_ALLOWED',
  'ERR_REQUEST_TIMEOUT',
  'ERR_HEADERS_TOO_LARGE',
  'ERR_UPSTREAM',
  'ERR_HTTP_VERSION',
  'ERR_CONFIG_INVALID',
  // Token refusals (the SDK's middleware and requireToken answer them too; enforce.ts tokenRefusal).
  'ERR_TOKEN_REQUIRED',
  'ERR_TOKEN_NOT_ACCEPTED',
] as const;
