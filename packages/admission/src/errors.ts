/** The codes the admission library throws (in WritErrors). */
export const ADMISSION_ERROR_CODES = ['ERR_PSS_VERSION_INVALID', 'ERR_PSS_LEVEL_INVALID', 'ERR_ADMISSION_OBJECT_INVALID'] as const;

export type AdmissionErrorCode = (typeof ADMISSION_ERROR_CODES)[number];
