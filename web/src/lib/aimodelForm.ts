// The AIModel form: its fields (strings, as inputs hold them), the spec they make (the CRD's
// camelCase names, which the admin API accepts and which is exactly the resource's YAML `spec`), the
// reverse (a spec from the API, snake_case or camelCase, back into the form), and the CRD's checks.

import type { AIModelSpecJson } from '../api/types';

export interface KeyRef {
  secretName: string;
  key: string;
}

export interface EnvVar {
  name: string;
  value: string;
}

export interface ModelForm {
  name: string;
  type: 'local' | 'remote' | 'echo';
  model: string;
  replicas: string;
  minReplicas: string;
  maxReplicas: string;
  baseURL: string;
  upstreamModel: string;
  apiKeys: KeyRef[];
  image: string;
  imagePullPolicy: '' | 'Always' | 'IfNotPresent' | 'Never';
  modelPath: string;
  maxProcessNum: string;
  msgBacklogThreshold: string;
  activationMsgBacklogThreshold: string;
  cpuRequest: string;
  memoryRequest: string;
  cpuLimit: string;
  memoryLimit: string;
  promptPer1k: string;
  completionPer1k: string;
  env: EnvVar[];
}

export function emptyForm(): ModelForm {
  return {
    name: '',
    type: 'local',
    model: '',
    replicas: '1',
    minReplicas: '',
    maxReplicas: '',
    baseURL: '',
    upstreamModel: '',
    apiKeys: [],
    image: '',
    imagePullPolicy: '',
    modelPath: '',
    maxProcessNum: '',
    msgBacklogThreshold: '',
    activationMsgBacklogThreshold: '',
    cpuRequest: '',
    memoryRequest: '',
    cpuLimit: '',
    memoryLimit: '',
    promptPer1k: '',
    completionPer1k: '',
    env: [],
  };
}

const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MODEL_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

function int(s: string): number | undefined {
  const t = s.trim();
  return /^-?\d+$/.test(t) ? Number(t) : undefined;
}

/** Problems with the form, field -> message (empty when it can be sent). Mirrors the CRD's rules. */
export function validateForm(f: ModelForm, editing = false): Record<string, string> {
  const e: Record<string, string> = {};
  if (!editing && (!NAME_RE.test(f.name) || f.name.length > 63)) {
    e.name = 'A DNS label: lower-case letters, digits and "-", at most 63 characters.';
  }
  if (!MODEL_RE.test(f.model) || f.model.length > 100) e.model = 'Letters, digits, ".", "_" and "-"; at most 100.';
  const ints: [keyof ModelForm, number, number?][] = [
    ['replicas', 0],
    ['minReplicas', 0],
    ['maxReplicas', 1],
    ['maxProcessNum', 1, 1024],
    ['msgBacklogThreshold', 1],
    ['activationMsgBacklogThreshold', 0],
    ['promptPer1k', 0],
    ['completionPer1k', 0],
  ];
  for (const [k, min, max] of ints) {
    const raw = (f[k] as string).trim();
    if (!raw) continue;
    const n = int(raw);
    if (n === undefined) e[k] = 'A whole number.';
    else if (n < min) e[k] = `At least ${min}.`;
    else if (max !== undefined && n > max) e[k] = `At most ${max}.`;
  }
  const lo = int(f.minReplicas);
  const hi = int(f.maxReplicas);
  if (lo !== undefined && hi !== undefined && lo > hi) e.maxReplicas = 'minReplicas must not exceed maxReplicas.';
  if (f.activationMsgBacklogThreshold.trim() && !f.msgBacklogThreshold.trim()) {
    e.activationMsgBacklogThreshold = 'Needs msgBacklogThreshold.';
  }
  if (f.type === 'remote') {
    if (!/^https?:\/\//.test(f.baseURL.trim())) e.baseURL = 'A remote model needs an http(s) base URL.';
    if (!f.apiKeys.some((k) => k.secretName.trim() && k.key.trim())) e.apiKeys = 'A remote model needs at least one Secret key.';
  } else if (f.baseURL.trim() && !/^https?:\/\//.test(f.baseURL.trim())) {
    e.baseURL = 'Must start with http:// or https://.';
  }
  f.apiKeys.forEach((k, i) => {
    if (!k.secretName.trim() !== !k.key.trim()) e[`apiKeys.${i}`] = 'Both the Secret name and its key.';
  });
  f.env.forEach((v, i) => {
    if (v.name.trim() && !ENV_RE.test(v.name.trim())) e[`env.${i}`] = 'Letters, digits and "_", not starting with a digit.';
  });
  return e;
}

/** The spec the form describes: only fields that are set (unset ones take the CRD's defaults). */
export function formToSpec(f: ModelForm): AIModelSpecJson {
  const spec: AIModelSpecJson = { type: f.type, model: f.model.trim() };
  const setInt = (key: string, raw: string) => {
    const n = int(raw);
    if (n !== undefined) spec[key] = n;
  };
  const setStr = (key: string, raw: string) => {
    if (raw.trim()) spec[key] = raw.trim();
  };
  setInt('replicas', f.replicas);
  setInt('minReplicas', f.minReplicas);
  setInt('maxReplicas', f.maxReplicas);
  setStr('baseURL', f.baseURL);
  setStr('upstreamModel', f.upstreamModel);
  const keys = f.apiKeys
    .filter((k) => k.secretName.trim() && k.key.trim())
    .map((k) => ({ secretName: k.secretName.trim(), key: k.key.trim() }));
  if (keys.length) spec.apiKeys = keys;
  setStr('image', f.image);
  setStr('imagePullPolicy', f.imagePullPolicy);
  setStr('modelPath', f.modelPath);
  setInt('maxProcessNum', f.maxProcessNum);
  setInt('msgBacklogThreshold', f.msgBacklogThreshold);
  setInt('activationMsgBacklogThreshold', f.activationMsgBacklogThreshold);
  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  if (f.cpuRequest.trim()) requests.cpu = f.cpuRequest.trim();
  if (f.memoryRequest.trim()) requests.memory = f.memoryRequest.trim();
  if (f.cpuLimit.trim()) limits.cpu = f.cpuLimit.trim();
  if (f.memoryLimit.trim()) limits.memory = f.memoryLimit.trim();
  if (Object.keys(requests).length || Object.keys(limits).length) {
    const resources: Record<string, unknown> = {};
    if (Object.keys(requests).length) resources.requests = requests;
    if (Object.keys(limits).length) resources.limits = limits;
    spec.resources = resources;
  }
  const prices: Record<string, number> = {};
  const p = int(f.promptPer1k);
  const c = int(f.completionPer1k);
  if (p !== undefined) prices.promptPer1k = p;
  if (c !== undefined) prices.completionPer1k = c;
  if (Object.keys(prices).length) spec.prices = prices;
  const env = f.env.filter((v) => v.name.trim()).map((v) => ({ name: v.name.trim(), value: v.value }));
  if (env.length) spec.env = env;
  return spec;
}

function pick(o: Record<string, unknown>, camel: string, snake: string): unknown {
  return o[camel] !== undefined ? o[camel] : o[snake];
}

function s(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

function rec(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** The form for an existing model (the API prints snake_case; a pasted resource is camelCase). */
export function specToForm(name: string, spec: AIModelSpecJson): ModelForm {
  const res = rec(spec.resources);
  const req = rec(res.requests);
  const lim = rec(res.limits);
  const prices = rec(spec.prices);
  const keys = pick(spec, 'apiKeys', 'api_keys');
  const env = spec.env;
  const t = s(spec.type);
  const type = t === 'remote' || t === 'echo' ? t : 'local';
  const policy = s(pick(spec, 'imagePullPolicy', 'image_pull_policy'));
  return {
    name,
    type,
    model: s(spec.model),
    replicas: s(spec.replicas),
    minReplicas: s(pick(spec, 'minReplicas', 'min_replicas')),
    maxReplicas: s(pick(spec, 'maxReplicas', 'max_replicas')),
    baseURL: s(pick(spec, 'baseURL', 'base_url')),
    upstreamModel: s(pick(spec, 'upstreamModel', 'upstream_model')),
    apiKeys: (Array.isArray(keys) ? keys : []).map((k) => {
      const r = rec(k);
      return { secretName: s(pick(r, 'secretName', 'secret_name')), key: s(r.key) };
    }),
    image: s(spec.image),
    imagePullPolicy: (['Always', 'IfNotPresent', 'Never'].includes(policy) ? policy : '') as ModelForm['imagePullPolicy'],
    modelPath: s(pick(spec, 'modelPath', 'model_path')),
    maxProcessNum: s(pick(spec, 'maxProcessNum', 'max_process_num')),
    msgBacklogThreshold: s(pick(spec, 'msgBacklogThreshold', 'msg_backlog_threshold')),
    activationMsgBacklogThreshold: s(pick(spec, 'activationMsgBacklogThreshold', 'activation_msg_backlog_threshold')),
    cpuRequest: s(req.cpu),
    memoryRequest: s(req.memory),
    cpuLimit: s(lim.cpu),
    memoryLimit: s(lim.memory),
    promptPer1k: s(pick(prices, 'promptPer1k', 'prompt_per1k')),
    completionPer1k: s(pick(prices, 'completionPer1k', 'completion_per1k')),
    env: (Array.isArray(env) ? env : []).map((v) => {
      const r = rec(v);
      return { name: s(r.name), value: s(r.value) };
    }),
  };
}

/** The whole resource, as `kubectl apply` takes it (for the YAML preview). */
export function toResource(name: string, spec: AIModelSpecJson, namespace = ''): Record<string, unknown> {
  const metadata: Record<string, unknown> = { name };
  if (namespace) metadata.namespace = namespace;
  return { apiVersion: 'uplion.io/v1alpha1', kind: 'AIModel', metadata, spec };
}
