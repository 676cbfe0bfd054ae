/** The codes the policy library throws (in WritErrors). */
export const POLICY_ERROR_CODES = ['ERR_POLICY_INVALID', 'ERR_ACTION_INVALID', 'ERR_PATH_INVALID', 'ERR_FIELD_INVALID'] as const;
