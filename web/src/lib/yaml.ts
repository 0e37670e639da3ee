// A small YAML writer for plain JSON data (objects, arrays, strings, numbers, booleans, null):
// enough for the AIModel preview. Strings that YAML would read as something else are written as
// JSON strings, which are valid YAML double-quoted scalars.

type Value = unknown;

const PLAIN = /^[A-Za-z0-9_./][A-Za-z0-9_ ./:@+-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~|-?\d+(\.\d+)?([eE][-+]?\d+)?|\.inf|\.nan|0x[0-9a-f]+|0o[0-7]+)$/i;

export function scalar(v: Value): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  const str = String(v);
  if (str === '' || !PLAIN.test(str) || RESERVED.test(str) || str.endsWith(' ') || str.includes(': ') || str.includes(' #')) {
    return JSON.stringify(str);
  }
  return str;
}

function key(k: string): string {
  return scalar(k);
}

function isObject(v: Value): v is Record<string, Value> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

function lines(v: Value, indent: string): string[] {
  if (Array.isArray(v)) {
    if (!v.length) return [`${indent}[]`];
    const out: string[] = [];
    for (const item of v) {
      if ((isObject(item) && Object.keys(item).length) || (Array.isArray(item) && item.length)) {
        const inner = lines(item, `${indent}  `);
        out.push(`${indent}- ${inner[0].trimStart()}`, ...inner.slice(1));
      } else {
        out.push(`${indent}- ${isObject(item) ? '{}' : Array.isArray(item) ? '[]' : scalar(item)}`);
      }
    }
    return out;
  }
  if (isObject(v)) {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    if (!keys.length) return [`${indent}{}`];
    const out: string[] = [];
    for (const k of keys) {
      const val = v[k];
      if ((isObject(val) && Object.keys(val).length) || (Array.isArray(val) && val.length)) {
        out.push(`${indent}${key(k)}:`, ...lines(val, isObject(val) ? `${indent}  ` : indent));
      } else {
        out.push(`${indent}${key(k)}: ${isObject(val) ? '{}' : Array.isArray(val) ? '[]' : scalar(val)}`);
      }
    }
    return out;
  }
  return [`${indent}${scalar(v)}`];
}

export function toYaml(v: Value): string {
  return `${lines(v, '').join('\n')}\n`;
}
