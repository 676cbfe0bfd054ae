export type { PodLike, PssLevel, Violation } from './types.ts';
