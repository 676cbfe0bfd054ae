/**
 * JSON text that remembers what it encodes. A server that shares one serialised fragment among a
 * thousand answers still assembles those answers from typed parts, never from bare strings.
 */
declare const encodes: unique symbol;
export type Json<T> = string & { readonly [encodes]: T };

/** `JSON.stringify(value)`, typed by what it encodes. */
export function toJson<T>(value: T): Json<T> {
  return JSON.stringify(value) as Json<T>;
}

/** The members of an encoded object without its braces, to splice into a larger object: `{"a":1}` -> `"a":1`. */
export function members<T extends object>(json: Json<T>): string {
  return json.slice(1, -1);
}
