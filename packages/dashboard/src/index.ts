/** @writ/dashboard: the web UI's browser code (bundled by scripts/build.mjs into dist/dashboard; the server serves it at /ui). */
export { Dashboard, VIEWS, type View } from './app.ts';
export { Api, ApiError, type Role, type Session } from './api.ts';
export { COLORS, drawGraph, edgeColor, groupOf, labelOf, layout, type GraphAnswer, type GraphEdge } from './graph.ts';
