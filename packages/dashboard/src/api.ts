/// <reference lib="dom" />
/** The dashboard's client of the server API: same origin, the session cookie, and the CSRF header on writes. */

export type Role = 'viewer' | 'operator' | 'admin';

export interface Session {
  readonly role: Role;
  readonly name: string;
}

/** An answer that was not 2xx, with the server's stable code. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  #csrf = '';

  /** Signs in with an API token; the cookie is set by the answer, the CSRF value kept here. */
  async signIn(token: string): Promise<Session> {
    const s = (await this.#call('POST', '/ui/session', { token })) as Session & { csrf: string };
    this.#csrf = s.csrf;
    return { role: s.role, name: s.name };
  }

  /** The session of an earlier sign-in (a reloaded page), or undefined when there is none. */
  async resume(): Promise<Session | undefined> {
    try {
      const s = (await this.#call('GET', '/ui/session')) as Session & { csrf: string };
      this.#csrf = s.csrf;
      return { role: s.role, name: s.name };
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return undefined;
      throw err;
    }
  }

  async signOut(): Promise<void> {
    await this.#call('DELETE', '/ui/session');
    this.#csrf = '';
  }

  get(path: string): Promise<unknown> {
    return this.#call('GET', path);
  }

  /** GET that answers undefined on 404: for routes a server may not have (audit, alerts). */
  async getIfPresent(path: string): Promise<unknown> {
    try {
      return await this.#call('GET', path);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && err.code === 'ERR_NOT_FOUND') return undefined;
      throw err;
    }
  }

  send(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<unknown> {
    return this.#call(method, path, body);
  }

  async #call(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && this.#csrf) headers['x-writ-csrf'] = this.#csrf;
    const res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    const type = res.headers.get('content-type') ?? '';
    const data: unknown = type.includes('json') && text ? JSON.parse(text) : text;
    if (!res.ok) {
      const e = (data ?? {}) as { code?: string; message?: string };
      throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? res.statusText);
    }
    return data;
  }
}
