/// <reference lib="dom" />
/** The dashboard's pages, drawn with lit-html: each view loads what it shows from the server API. */
import { html, nothing, render, type TemplateResult } from 'lit-html';
import { Api, ApiError, type Session } from './api.ts';
import { drawGraph, fingerprint, type DrawnGraph, type GraphAnswer, type GraphEdge } from './graph.ts';

export const VIEWS = ['graph', 'identities', 'policies', 'quarantine', 'images', 'audit', 'alerts', 'learning'] as const;
export type View = (typeof VIEWS)[number];
const TITLES: Record<View, string> = {
  graph: 'Service graph',
  identities: 'Identities',
  policies: 'Policies',
  quarantine: 'Quarantine',
  images: 'Images & CVEs',
  audit: 'Audit',
  alerts: 'Alerts',
  learning: 'Learning',
};

type Row = Record<string, unknown>;

const cell = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

/** A table of rows with the columns the first rows have; `actions` adds a last column. */
function table(rows: readonly Row[], actions?: (r: Row) => TemplateResult | typeof nothing): TemplateResult {
  if (rows.length === 0) return html`<p class="empty">Nothing here yet.</p>`;
  const cols = [...new Set(rows.slice(0, 20).flatMap((r) => Object.keys(r)))].slice(0, 8);
  return html`<table>
    <thead><tr>${cols.map((c) => html`<th>${c}</th>`)}${actions ? html`<th></th>` : nothing}</tr></thead>
    <tbody>${rows.slice(0, 500).map((r) => html`<tr>${cols.map((c) => html`<td>${cell(r[c])}</td>`)}${actions ? html`<td>${actions(r)}</td>` : nothing}</tr>`)}</tbody>
  </table>`;
}

/** The first array in an answer (`{entries: [...]}` → the entries). */
function rowsOf(answer: unknown): Row[] {
  if (Array.isArray(answer)) return answer as Row[];
  if (answer && typeof answer === 'object') for (const v of Object.values(answer)) if (Array.isArray(v)) return v as Row[];
  return [];
}

const formValue = (form: HTMLFormElement, name: string): string => String(new FormData(form).get(name) ?? '').trim();

export class Dashboard {
  readonly #root: HTMLElement;
  readonly #api = new Api();
  #session: Session | undefined;
  #view: View = 'graph';
  #content: TemplateResult = html``;
  #message = '';
  #graph: DrawnGraph | undefined;
  #selected: GraphEdge | undefined;
  #top: GraphEdge[] = [];
  #explain: unknown;
  #filters = { window: '1h', trustDomain: '', namespace: '' };
  #timer: number | undefined;

  constructor(root: HTMLElement) {
    this.#root = root;
  }

  async start(): Promise<void> {
    this.#session = await this.#api.resume().catch(() => undefined);
    // Filters from the address (`/ui?window=24h&namespace=shop#graph`): a view can be linked to.
    const q = new URLSearchParams(location.search);
    this.#filters = { window: q.get('window') || '1h', trustDomain: q.get('trustDomain') ?? '', namespace: q.get('namespace') ?? '' };
    const v = location.hash.slice(1) as View;
    if (VIEWS.includes(v)) this.#view = v;
    window.addEventListener('hashchange', () => {
      const h = location.hash.slice(1) as View;
      if (VIEWS.includes(h) && h !== this.#view) void this.show(h);
    });
    if (this.#session) await this.show(this.#view);
    else this.#draw();
  }

  get #canAct(): boolean {
    return this.#session?.role === 'operator' || this.#session?.role === 'admin';
  }

  #draw(): void {
    if (!this.#session) {
      render(
        html`<main class="signin">
          <h1>Writ</h1>
          <form id="signin" @submit=${(e: Event) => this.#signIn(e)}>
            <label>API token <input name="token" type="password" autocomplete="off" required /></label>
            <button type="submit">Sign in</button>
          </form>
          <p class="message" role="alert">${this.#message}</p>
        </main>`,
        this.#root,
      );
      return;
    }
    render(
      html`<header>
          <strong>Writ</strong>
          <nav>${VIEWS.map((v) => html`<a href="#${v}" class=${v === this.#view ? 'active' : ''} data-view=${v}>${TITLES[v]}</a>`)}</nav>
          <span class="who" data-role=${this.#session.role}>${this.#session.name || 'token'} · ${this.#session.role}</span>
          <button id="signout" @click=${() => this.#signOut()}>Sign out</button>
        </header>
        <main>
          <h2>${TITLES[this.#view]}</h2>
          <p class="message" role="alert">${this.#message}</p>
          ${this.#content}
        </main>`,
      this.#root,
    );
  }

  async #signIn(e: Event): Promise<void> {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    try {
      this.#session = await this.#api.signIn(formValue(form, 'token'));
      this.#message = '';
      form.reset();
      await this.show(this.#view);
    } catch (err) {
      this.#message = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err);
      this.#draw();
    }
  }

  async #signOut(): Promise<void> {
    await this.#api.signOut().catch(() => undefined);
    this.#session = undefined;
    this.#stopGraph();
    this.#draw();
  }

  #stopGraph(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#graph?.kill();
    this.#graph = undefined;
  }

  /** Runs an action and shows its error (a viewer trying to act sees the server's ERR_FORBIDDEN). */
  async #act(what: () => Promise<unknown>, done: string): Promise<void> {
    try {
      await what();
      this.#message = done;
    } catch (err) {
      this.#message = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err);
      if (err instanceof ApiError && err.code === 'ERR_SESSION_INVALID') this.#session = undefined;
    }
    await this.show(this.#view);
  }

  async show(view: View): Promise<void> {
    if (view !== this.#view) this.#message = '';
    this.#view = view;
    if (view !== 'graph') this.#stopGraph();
    try {
      this.#content = await this.#load(view);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'ERR_SESSION_INVALID') this.#session = undefined;
      this.#content = html`<p class="error">${err instanceof ApiError ? `${err.code}: ${err.message}` : String(err)}</p>`;
    }
    this.#draw();
    if (view === 'graph') await this.#refreshGraph();
  }

  async #load(view: View): Promise<TemplateResult> {
    const api = this.#api;
    switch (view) {
      case 'graph':
        return this.#graphView();
      case 'identities': {
        const [entries, agents] = await Promise.all([api.get('/v1/entries?pageSize=1000'), api.get('/v1/agents')]);
        return html`<h3>Entries</h3>
          ${table(rowsOf(entries).map((e) => ({ spiffeId: e['spiffeId'], parentId: e['parentId'], selectors: e['selectors'], x509SvidTtl: e['x509SvidTtl'], expiresAt: e['expiresAt'] })))}
          <h3>Agents (SVID expiry)</h3>
          ${table(rowsOf(agents).map((a) => ({ spiffeId: a['spiffeId'], nodeName: a['nodeName'], attestation: a['attestationType'], svidExpiresAt: a['expiresAt'], banned: a['banned'] })))}`;
      }
      case 'policies':
        return this.#policiesView();
      case 'quarantine': {
        const q = await api.get('/v1/quarantine');
        return html`${
          this.#canAct
            ? html`<form id="quarantine-add" @submit=${(e: Event) => this.#quarantine(e)}>
                <input name="spiffeId" placeholder="spiffe://example.org/ns/shop/sa/web" required />
                <input name="reason" placeholder="reason" required />
                <input name="ttl" placeholder="ttl (e.g. 1h, empty: until lifted)" />
                <button type="submit">Quarantine</button>
              </form>`
            : html`<p class="note">Your role (viewer) reads; an operator quarantines.</p>`
        }
          ${table(rowsOf(q), (r) =>
            this.#canAct
              ? html`<button class="lift" @click=${() => this.#act(() => api.send('DELETE', `/v1/quarantine/${encodeURIComponent(String(r['spiffeId']))}`), 'lifted')}>Lift</button>`
              : nothing,
          )}`;
      }
      case 'images': {
        const v = await api.get('/v1/vulnerabilities');
        return html`<p>Click a vulnerability for its affected workloads and rollout.</p>
          ${table(rowsOf(v), (r) => html`<button @click=${() => this.#cve(String(r['id'] ?? r['vulnerability'] ?? ''))}>Affected</button>`)}`;
      }
      case 'audit': {
        const c = await api.getIfPresent('/v1/audit/checkpoint');
        if (c === undefined) return html`<p class="unavailable">Audit log: not available on this server.</p>`;
        return html`<h3>Latest checkpoint</h3><pre>${typeof c === 'string' ? c : JSON.stringify(c, null, 2)}</pre>`;
      }
      case 'alerts': {
        const a = await api.getIfPresent('/v1/alerts');
        if (a === undefined) return html`<p class="unavailable">Alerts: not available on this server.</p>`;
        return table(rowsOf(a));
      }
      case 'learning': {
        const [windows, edges] = await Promise.all([api.get('/v1/learning'), api.get('/v1/learning/edges')]);
        return html`<h3>Learning windows</h3>
          ${table(rowsOf(windows), (r) => html`<button @click=${() => this.#proposal(String(r['to'] ?? ''))}>Proposal</button>`)}
          <h3>Observed edges</h3>
          ${table(rowsOf(edges))}`;
      }
    }
  }

  async #cve(id: string): Promise<void> {
    const [affected, rollout] = await Promise.all([
      this.#api.get(`/v1/vulnerabilities/${encodeURIComponent(id)}/affected`).catch((e: unknown) => ({ error: String(e) })),
      this.#api.get(`/v1/vulnerabilities/${encodeURIComponent(id)}/rollout`).catch((e: unknown) => ({ error: String(e) })),
    ]);
    this.#content = html`<button @click=${() => this.show('images')}>Back</button>
      <h3>${id}: affected workloads</h3>
      ${table(rowsOf(affected))}
      <h3>Rollout</h3>
      <pre>${JSON.stringify(rollout, null, 2)}</pre>`;
    this.#draw();
  }

  async #proposal(to: string): Promise<void> {
    const p = await this.#api.get(`/v1/policies/proposal?to=${encodeURIComponent(to)}`).catch((e: unknown) => String(e));
    this.#content = html`<button @click=${() => this.show('learning')}>Back</button>
      <h3>Proposal for ${to}</h3>
      <pre>${typeof p === 'string' ? p : JSON.stringify(p, null, 2)}</pre>`;
    this.#draw();
  }

  async #quarantine(e: Event): Promise<void> {
    e.preventDefault();
    const f = e.target as HTMLFormElement;
    const ttl = formValue(f, 'ttl');
    await this.#act(
      () => this.#api.send('POST', '/v1/quarantine', { spiffeId: formValue(f, 'spiffeId'), reason: formValue(f, 'reason'), ...(ttl ? { ttl } : {}) }),
      'quarantined',
    );
  }

  async #policiesView(): Promise<TemplateResult> {
    const [current, history] = await Promise.all([this.#api.get('/v1/policies'), this.#api.get('/v1/policies/history?limit=50')]);
    return html`<h3>Current set</h3>
      ${table(rowsOf(current))}
      <h3>Revisions</h3>
      ${table(rowsOf(history))}
      <h3>Diff</h3>
      <form id="policy-diff" @submit=${(e: Event) => this.#diff(e)}>
        <input name="from" placeholder="from revision" required /> <input name="to" placeholder="to (latest)" />
        <button type="submit">Diff</button>
      </form>
      <h3>Test a call</h3>
      <form id="policy-test" @submit=${(e: Event) => this.#testCall(e)}>
        <input name="from" placeholder="from (SPIFFE ID)" /> <input name="to" placeholder="to (SPIFFE ID)" required />
        <input name="action" placeholder="GET /path" required />
        <button type="submit">Test</button>
      </form>
      <pre id="policy-result"></pre>`;
  }

  async #diff(e: Event): Promise<void> {
    e.preventDefault();
    const f = e.target as HTMLFormElement;
    const to = formValue(f, 'to');
    const out = await this.#api
      .get(`/v1/policies/diff?from=${encodeURIComponent(formValue(f, 'from'))}${to ? `&to=${encodeURIComponent(to)}` : ''}`)
      .catch((err: unknown) => (err instanceof ApiError ? `${err.code}: ${err.message}` : String(err)));
    this.#root.querySelector('#policy-result')!.textContent = typeof out === 'string' ? out : JSON.stringify(out, null, 2);
  }

  async #testCall(e: Event): Promise<void> {
    e.preventDefault();
    const f = e.target as HTMLFormElement;
    const from = formValue(f, 'from');
    const out = await this.#api
      .send('POST', '/v1/authz/check', { ...(from ? { from } : {}), to: formValue(f, 'to'), action: formValue(f, 'action') })
      .catch((err: unknown) => (err instanceof ApiError ? `${err.code}: ${err.message}` : String(err)));
    this.#root.querySelector('#policy-result')!.textContent = typeof out === 'string' ? out : JSON.stringify(out, null, 2);
  }

  // ---------------------------------------------------------------- the service graph

  #graphView(): TemplateResult {
    const f = this.#filters;
    const e = this.#selected;
    return html`<form id="graph-filters" @change=${(ev: Event) => this.#filter(ev)} @submit=${(ev: Event) => this.#filter(ev)}>
        <label>Window <select name="window">${[...new Set(['5m', '1h', '24h', '7d', f.window])].map((w) => html`<option ?selected=${w === f.window}>${w}</option>`)}</select></label>
        <label>Trust domain <input name="trustDomain" .value=${f.trustDomain} placeholder="any" /></label>
        <label>Namespace <input name="namespace" .value=${f.namespace} placeholder="any" /></label>
        <span class="legend"><i class="allow"></i>allow <i class="deny"></i>deny <i class="would-deny"></i>audit: would deny</span>
        <span id="graph-stats"></span>
      </form>
      <div class="graph-area">
        <div id="graph"></div>
        <aside id="edge">
          ${
            e
              ? html`<h3>Edge</h3>
                  <dl>
                    <dt>from</dt><dd class="from">${e.from || '(unauthenticated)'}</dd>
                    <dt>to</dt><dd class="to">${e.to}</dd>
                    <dt>actions</dt><dd class="actions">${e.action.split('\n').map((a) => html`<div>${a}</div>`)}</dd>
                    <dt>allow / deny / would deny</dt><dd class="counts">${e.allow} / ${e.deny} / ${e.auditWouldDeny}</dd>
                    <dt>rules</dt><dd class="rules">${e.rules.map((r) => html`<div>${r || '(no rule matched)'}</div>`)}</dd>
                  </dl>
                  <button id="explain" @click=${() => this.#explainEdge(e)}>Explain</button>
                  ${
                    this.#canAct && e.from
                      ? html`<button id="quarantine-caller" @click=${() => this.#act(() => this.#api.send('POST', '/v1/quarantine', { spiffeId: e.from, reason: `from the dashboard: calls to ${e.to}` }), `quarantined ${e.from}`)}>Quarantine caller</button>`
                      : nothing
                  }
                  ${this.#explain ? html`<pre id="explanation">${JSON.stringify(this.#explain, null, 2)}</pre>` : nothing}`
              : html`<p class="note">Click an edge (or a row below) for its rule and an explanation.</p>`
          }
        </aside>
      </div>
      <h3>Busiest edges</h3>
      <table id="edge-list">
        <thead><tr><th>from</th><th>to</th><th>allow</th><th>deny</th><th>would deny</th></tr></thead>
        <tbody>
          ${this.#top.map(
            (x) =>
              html`<tr class=${x.deny ? 'deny' : x.auditWouldDeny ? 'would-deny' : 'allow'} data-from=${x.from} data-to=${x.to} @click=${() => this.#select(x)}>
                <td>${x.from || '(unauthenticated)'}</td><td>${x.to}</td><td>${x.allow}</td><td>${x.deny}</td><td>${x.auditWouldDeny}</td>
              </tr>`,
          )}
        </tbody>
      </table>`;
  }

  #select(e: GraphEdge): void {
    this.#selected = e;
    this.#explain = undefined;
    this.#content = this.#graphView();
    this.#draw();
  }

  async #filter(ev: Event): Promise<void> {
    ev.preventDefault();
    const form = (ev.currentTarget ?? ev.target) as HTMLFormElement;
    this.#filters = { window: formValue(form, 'window') || '1h', trustDomain: formValue(form, 'trustDomain'), namespace: formValue(form, 'namespace') };
    this.#graph?.kill();
    this.#graph = undefined;
    await this.#refreshGraph();
  }

  async #explainEdge(e: GraphEdge): Promise<void> {
    const action = e.action.split('\n')[0]!;
    try {
      this.#explain = await this.#api.send('POST', '/v1/authz/check', { ...(e.from ? { from: e.from } : {}), to: e.to, action });
    } catch (err) {
      this.#explain = err instanceof ApiError ? { code: err.code, message: err.message } : String(err);
    }
    this.#content = this.#graphView();
    this.#draw();
  }

  /** Loads the graph and redraws it when it changed; while the view is open, again and again (live from the decision log). */
  async #refreshGraph(): Promise<void> {
    const f = this.#filters;
    const q = new URLSearchParams({ window: f.window, shape: 'columns' });
    if (f.trustDomain) q.set('trustDomain', f.trustDomain);
    if (f.namespace) q.set('namespace', f.namespace);
    const el = this.#root.querySelector<HTMLElement>('#graph');
    const stats = this.#root.querySelector<HTMLElement>('#graph-stats');
    if (!el) return;
    performance.mark('writ:graph-fetch');
    let answer: GraphAnswer;
    try {
      answer = (await this.#api.get(`/v1/graph?${q}`)) as GraphAnswer;
    } catch (err) {
      if (stats) stats.textContent = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err);
      return;
    }
    performance.mark('writ:graph-fetched');
    const signature = fingerprint(answer);
    if (!this.#graph || el.dataset['signature'] !== signature) {
      this.#graph?.kill();
      el.dataset['signature'] = signature;
      this.#graph = drawGraph(el, answer, (e) => this.#select(e));
      // The busiest edges as a list too (readable without the picture, and keyboard-reachable).
      this.#top = this.#graph.busiest(25);
      this.#content = this.#graphView();
      this.#draw();
      performance.mark('writ:graph-listed');
    }
    const edges = answer.edges.from.length;
    if (stats) stats.textContent = `${answer.nodes.length} identities, ${edges} edges${answer.truncated ? ' (truncated)' : ''}`;
    // Live: every 3 s, or every 30 s for a graph of more than 10,000 edges (each refresh reads it whole).
    // A tick that comes while the user drags or zooms is skipped: reading a large answer would stall the gesture.
    if (this.#timer === undefined)
      this.#timer = window.setInterval(
        () => {
          if (!this.#graph?.moving()) void this.#refreshGraph();
        },
        edges > 10_000 ? 30_000 : 3000,
      );
  }
}
