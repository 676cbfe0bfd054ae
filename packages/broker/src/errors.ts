/**
 * The broker's error codes. A token endpoint answers with RFC 6749 section 5.2 errors, so every
 * code carries its OAuth `error` value as well; `TokenError.toJSON` gives both forms at once
 * (`{code, message, error, error_description}`), whoever serialises it.
 */
import { WritError } from '@writ/spiffe';

/**
 * RFC 6749 section 5.2 error values and RFC 8693's `invalid_target` (the token endpoint), and
 * RFC 6750 section 3.1's `invalid_token` and `insufficient_scope` (a receiver refusing a bearer token).
 */
export const OAUTH_ERRORS = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'invalid_target',
  'invalid_token',
  'insufficient_scope',
] as const;
export type OAuthError = (typeof OAUTH_ERRORS)[number];

/** The codes this library throws, each with the OAuth error it answers as. */
export const BROKER_ERROR_CODES = {
  ERR_TOKEN_REQUEST_INVALID: 'invalid_request',
  ERR_TOKEN_CLIENT_INVALID: 'invalid_client',
  ERR_TOKEN_GRANT_INVALID: 'invalid_grant',
  ERR_TOKEN_CLIENT_UNAUTHORIZED: 'unauthorized_client',
  ERR_TOKEN_GRANT_TYPE_UNSUPPORTED: 'unsupported_grant_type',
  ERR_TOKEN_SCOPE_INVALID: 'invalid_scope',
  ERR_TOKEN_TARGET_INVALID: 'invalid_target',
  // The receiving side (verifyToken), for a `WWW-Authenticate: Bearer error="..."` answer (RFC 6750).
  ERR_TOKEN_INVALID: 'invalid_token',
  ERR_TOKEN_SCOPE_INSUFFICIENT: 'insufficient_scope',
  ERR_TOKEN_DEPTH_EXCEEDED: 'invalid_token',
} as const satisfies Record<string, OAuthError>;
export type BrokerErrorCode = keyof typeof BROKER_ERROR_CODES;

/** A refused token request or token: a WritError whose JSON form is also an RFC 6749 error response. */
export class TokenError extends WritError {
  readonly error: OAuthError;

  constructor(code: BrokerErrorCode | 'ERR_BODY_TOO_LARGE', message: string, error?: OAuthError) {
    super(code, message);
    this.name = 'TokenError';
    this.error = error ?? (code === 'ERR_BODY_TOO_LARGE' ? 'invalid_request' : BROKER_ERROR_CODES[code]);
  }

  override toJSON(): { code: string; message: string; error: OAuthError; error_description: string } {
    // error_description is limited to printable ASCII without " and \ (RFC 6749 section 5.2).
    const description = this.message
      .replace(/"/g, "'")
      .replace(/\\/g, '/')
      .replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '?')
      .slice(0, 500);
    return { code: this.code, message: this.message, error: this.error, error_description: description };
  }
}

export function tokenError(code: BrokerErrorCode, message: string): TokenError {
  return new TokenError(code, message);
}
