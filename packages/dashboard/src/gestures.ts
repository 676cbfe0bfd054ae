/// <reference lib="dom" />
/**
 * Pan and zoom that cost nothing per frame: during a drag or a wheel gesture sigma does not draw;
 * its last picture is moved by a CSS transform (the compositor's work), and the camera is set once,
 * when the gesture ends, for one full-quality redraw. Where the moved picture leaves a gap, a
 * picture of the whole graph taken at the first render shows underneath (blurred when zoomed in).
 * A software renderer (no GPU: headless Chromium, a server's browser) redraws 50,000 edges a few
 * times a second at best; a transform it composites at the display's rate.
 */
import type Sigma from 'sigma';

/** How far the pointer moves before a press is a drag and not a click (px). */
const DRAG_THRESHOLD = 3;
/** A wheel gesture ends when no wheel event came for this long (ms). */
const WHEEL_END_MS = 150;

export interface Gestures {
  /** True while a drag or a wheel gesture lasts, or its redraw is pending. */
  active(): boolean;
  /** Stops listening (the graph is being replaced). */
  kill(): void;
}

/**
 * Takes over sigma's mouse drag and wheel on `frame` (an ancestor of sigma's container `layer`).
 * A click without movement still reaches sigma (node and edge clicks); touch stays sigma's own.
 * Marks `writ:graph-redrawn` at the redraw that ends each gesture.
 */
export function fastGestures(frame: HTMLElement, layer: HTMLElement, sigma: Sigma): Gestures {
  const camera = sigma.getCamera();
  const overview = capture(layer);
  const overviewCamera = camera.getState();
  if (overview) frame.insertBefore(overview, layer);

  // The picture on screen is sigma's last render moved by: screen = s * picture + (tx, ty).
  let s = 1;
  let tx = 0;
  let ty = 0;
  // Where the overview sits relative to sigma's last render (recomputed after each redraw).
  let os = 1;
  let ox = 0;
  let oy = 0;
  // A committed transform that the next render turns into camera state (undefined: none pending).
  let pending: { s: number; tx: number; ty: number } | undefined;
  let recommit = false;
  let dragging = false;
  let pressed = false;
  let lastX = 0;
  let lastY = 0;
  let downX = 0;
  let downY = 0;
  let swallowClick = false;
  let wheelTimer: number | undefined;

  const placeOverview = (): void => {
    if (!overview) return;
    const { width, height } = sigma.getDimensions();
    const a = sigma.framedGraphToViewport(sigma.viewportToFramedGraph({ x: 0, y: 0 }, { cameraState: overviewCamera }));
    const b = sigma.framedGraphToViewport(sigma.viewportToFramedGraph({ x: width, y: height }, { cameraState: overviewCamera }));
    os = (b.x - a.x) / width;
    ox = a.x;
    oy = a.y;
  };
  placeOverview();

  const apply = (): void => {
    const moved = s !== 1 || tx !== 0 || ty !== 0;
    layer.style.transform = moved ? `translate(${tx}px,${ty}px) scale(${s})` : '';
    if (!overview) return;
    overview.style.visibility = moved ? 'visible' : 'hidden';
    if (moved) overview.style.transform = `translate(${s * ox + tx}px,${s * oy + ty}px) scale(${s * os})`;
  };

  /** Hands the transform to the camera: sigma redraws at the next frame, and the transform is undone in that same frame. */
  const commit = (): void => {
    if (s === 1 && tx === 0 && ty === 0) return;
    if (pending) {
      recommit = true;
      return;
    }
    const { width, height } = sigma.getDimensions();
    // The picture's point now at the centre of the view becomes the camera's centre.
    const centre = sigma.viewportToFramedGraph({ x: (width / 2 - tx) / s, y: (height / 2 - ty) / s });
    pending = { s, tx, ty };
    const state = camera.getState();
    camera.setState({ x: centre.x, y: centre.y, ratio: camera.getBoundedRatio(state.ratio / s) });
  };

  const afterRender = (): void => {
    if (!pending) return;
    // The new picture is the old one moved by `pending`: what is left of the transform is the
    // movement since the commit (none, unless a gesture went on meanwhile).
    s /= pending.s;
    tx -= s * pending.tx;
    ty -= s * pending.ty;
    if (Math.abs(s - 1) < 1e-9 && Math.abs(tx) < 1e-6 && Math.abs(ty) < 1e-6) {
      s = 1;
      tx = 0;
      ty = 0;
    }
    pending = undefined;
    placeOverview();
    apply();
    performance.mark('writ:graph-redrawn');
    if (recommit && !pressed && wheelTimer === undefined) {
      recommit = false;
      commit();
    }
  };
  sigma.on('afterRender', afterRender);

  const onDown = (e: MouseEvent): void => {
    if (e.button !== 0) return;
    // Sigma never sees the press: it would start its own (redrawing) drag.
    e.stopPropagation();
    pressed = true;
    dragging = false;
    downX = lastX = e.clientX;
    downY = lastY = e.clientY;
    window.addEventListener('mousemove', onMove, true);
    window.addEventListener('mouseup', onUp, true);
  };
  const onMove = (e: MouseEvent): void => {
    if (!dragging && Math.abs(e.clientX - downX) + Math.abs(e.clientY - downY) < DRAG_THRESHOLD) return;
    dragging = true;
    // Nor the moves of a drag (each would look for a node under the pointer).
    e.stopPropagation();
    e.preventDefault();
    tx += e.clientX - lastX;
    ty += e.clientY - lastY;
    lastX = e.clientX;
    lastY = e.clientY;
    apply();
  };
  const onUp = (e: MouseEvent): void => {
    window.removeEventListener('mousemove', onMove, true);
    window.removeEventListener('mouseup', onUp, true);
    pressed = false;
    if (!dragging) return;
    dragging = false;
    e.stopPropagation();
    // The click that follows a drag is not a click on a node.
    swallowClick = true;
    setTimeout(() => (swallowClick = false), 0);
    commit();
  };
  const onClick = (e: MouseEvent): void => {
    if (!swallowClick) return;
    swallowClick = false;
    e.stopPropagation();
  };
  const onWheel = (e: WheelEvent): void => {
    e.preventDefault();
    e.stopPropagation();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    const box = frame.getBoundingClientRect();
    const px = e.clientX - box.left;
    const py = e.clientY - box.top;
    // Zoom about the pointer: the point under it stays under it.
    const f = Math.exp(-delta / 300);
    const ratio = camera.getState().ratio / (s * f);
    if (ratio !== camera.getBoundedRatio(ratio)) return;
    s *= f;
    tx = px - f * (px - tx);
    ty = py - f * (py - ty);
    apply();
    if (wheelTimer !== undefined) clearTimeout(wheelTimer);
    wheelTimer = window.setTimeout(() => {
      wheelTimer = undefined;
      if (!pressed) commit();
    }, WHEEL_END_MS);
  };

  frame.addEventListener('mousedown', onDown, true);
  frame.addEventListener('click', onClick, true);
  frame.addEventListener('wheel', onWheel, { capture: true, passive: false });
  return {
    active: () => pressed || wheelTimer !== undefined || pending !== undefined,
    kill(): void {
      frame.removeEventListener('mousedown', onDown, true);
      frame.removeEventListener('click', onClick, true);
      frame.removeEventListener('wheel', onWheel, true);
      window.removeEventListener('mousemove', onMove, true);
      window.removeEventListener('mouseup', onUp, true);
      if (wheelTimer !== undefined) clearTimeout(wheelTimer);
      sigma.off('afterRender', afterRender);
      overview?.remove();
      layer.style.transform = '';
    },
  };
}

/**
 * Sigma's canvases drawn into one: a picture of what was just rendered. Called in the task that
 * rendered (sigma's WebGL canvases keep their picture only until it is shown).
 */
function capture(layer: HTMLElement): HTMLCanvasElement | undefined {
  const canvases = Array.from(layer.querySelectorAll('canvas')).filter((c) => !c.classList.contains('sigma-mouse'));
  const first = canvases[0];
  if (!first || first.width === 0 || first.height === 0) return undefined;
  const out = document.createElement('canvas');
  out.width = first.width;
  out.height = first.height;
  out.className = 'graph-overview';
  out.style.width = `${layer.clientWidth}px`;
  out.style.height = `${layer.clientHeight}px`;
  const ctx = out.getContext('2d');
  if (!ctx) return undefined;
  for (const c of canvases) ctx.drawImage(c, 0, 0, out.width, out.height);
  return out;
}
