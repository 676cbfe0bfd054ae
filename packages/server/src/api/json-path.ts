/** Where in a JSON text a syntax error is: the path of the value being read there (`Results[3].Vulnerabilities[0]`). */

const IDENT = /^[A-Za-z_$][\w$-]*$/;

/**
 * The JSON path of the value at character `pos` of `text` (one pass over the text before `pos`,
 * strings skipped): the place a parse error names, so a 64 MiB report that breaks says where.
 * `''` when the error is at the top level.
 * @example jsonPathAt('{"a": [1, 2, }', 13) === 'a[2]'
 */
export function jsonPathAt(text: string, pos: number): string {
  const stack: Array<{ array: boolean; key: string | undefined; index: number }> = [];
  let lastString: string | undefined;
  const end = Math.min(pos, text.length);
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      lastString = text.slice(i + 1, Math.min(j, i + 1 + 64));
      i = j;
      continue;
    }
    const top = stack.at(-1);
    if (c === 0x7b || c === 0x5b) stack.push({ array: c === 0x5b, key: undefined, index: 0 });
    else if (c === 0x7d || c === 0x5d) stack.pop();
    else if (c === 0x3a && top !== undefined && !top.array) top.key = lastString;
    else if (c === 0x2c && top !== undefined) {
      if (top.array) top.index++;
      else top.key = undefined;
    }
  }
  let path = '';
  for (const f of stack) {
    if (f.array) path += `[${f.index}]`;
    else if (f.key !== undefined) path += IDENT.test(f.key) ? (path === '' ? f.key : `.${f.key}`) : `[${JSON.stringify(f.key)}]`;
  }
  return path;
}

const NUMBER_OR_LITERAL = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
const ESCAPES: ReadonlySet<string> = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);

/** The end of the string starting at `i` (its opening quote), or the position of what breaks it as a negative number minus one. */
function stringEnd(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x22) return j + 1;
    if (c < 0x20) return -j - 1;
    if (c === 0x5c) {
      const e = text[j + 1] ?? '';
      if (e === 'u') {
        if (!/^[0-9a-fA-F]{4}$/.test(text.slice(j + 2, j + 6))) return -j - 1;
        j += 5;
      } else if (ESCAPES.has(e)) j++;
      else return -j - 1;
    }
  }
  return -text.length - 1;
}

/**
 * The position of the first JSON syntax error in `text` (RFC 8259), undefined when there is none.
 * Used only once JSON.parse has refused a text, to say where (V8's messages do not always).
 */
export function syntaxErrorAt(text: string): number | undefined {
  const n = text.length;
  const stack: boolean[] = []; // true: an array
  let expect: 'value' | 'valueOrClose' | 'key' | 'keyOrClose' | 'colon' | 'after' = 'value';
  let i = 0;
  for (;;) {
    while (i < n && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
    if (i >= n) return expect === 'after' && stack.length === 0 ? undefined : n;
    const c = text[i]!;
    switch (expect) {
      case 'valueOrClose':
      case 'value': {
        if (expect === 'valueOrClose' && c === ']') {
          stack.pop();
          i++;
          expect = 'after';
        } else if (c === '{' || c === '[') {
          stack.push(c === '[');
          i++;
          expect = c === '[' ? 'valueOrClose' : 'keyOrClose';
        } else if (c === '"') {
          const e = stringEnd(text, i);
          if (e < 0) return -e - 1;
          i = e;
          expect = 'after';
        } else {
          NUMBER_OR_LITERAL.lastIndex = i;
          if (!NUMBER_OR_LITERAL.test(text)) return i;
          i = NUMBER_OR_LITERAL.lastIndex;
          expect = 'after';
        }
        break;
      }
      case 'keyOrClose':
      case 'key': {
        if (expect === 'keyOrClose' && c === '}') {
          stack.pop();
          i++;
          expect = 'after';
          break;
        }
        if (c !== '"') return i;
        const e = stringEnd(text, i);
        if (e < 0) return -e - 1;
        i = e;
        expect = 'colon';
        break;
      }
      case 'colon':
        if (c !== ':') return i;
        i++;
        expect = 'value';
        break;
      case 'after': {
        if (stack.length === 0) return i;
        const array = stack.at(-1)!;
        if (c === ',') expect = array ? 'value' : 'key';
        else if (c === (array ? ']' : '}')) stack.pop();
        else return i;
        i++;
        break;
      }
    }
  }
}
