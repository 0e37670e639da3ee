import { describe, expect, it } from 'vitest';
import { emptyForm, formToSpec, type ModelForm, specToForm, toResource, validateForm } from './aimodelForm';
import { toYaml } from './yaml';

function form(over: Partial<ModelForm>): ModelForm {
  return { ...emptyForm(), ...over };
}

describe('formToSpec', () => {
  it('makes a minimal local spec with only the fields set', () => {
    expect(formToSpec(form({ name: 'echo', model: 'echo' }))).toEqual({ type: 'local', model: 'echo', replicas: 1 });
  });

  it('maps every field to the CRD names and types', () => {
    const spec = formToSpec(
      form({
        name: 'gpt',
        type: 'remote',
        model: 'gpt-4o',
        replicas: '',
        minReplicas: '0',
        maxReplicas: '5',
        baseURL: ' https://api.example.com/v1 ',
        upstreamModel: 'gpt-4o-2024',
        apiKeys: [
          { secretName: 'openai', key: 'key1' },
          { secretName: '', key: '' },
        ],
        image: 'registry.local/worker:1',
        imagePullPolicy: 'IfNotPresent',
        maxProcessNum: '8',
        msgBacklogThreshold: '10',
        activationMsgBacklogThreshold: '1',
        cpuRequest: '100m',
        memoryLimit: '512Mi',
        promptPer1k: '150',
        completionPer1k: '600',
        env: [
          { name: 'LOG_LEVEL', value: 'debug' },
          { name: ' ', value: 'ignored' },
        ],
      }),
    );
    expect(spec).toEqual({
      type: 'remote',
      model: 'gpt-4o',
      minReplicas: 0,
      maxReplicas: 5,
      baseURL: 'https://api.example.com/v1',
      upstreamModel: 'gpt-4o-2024',
      apiKeys: [{ secretName: 'openai', key: 'key1' }],
      image: 'registry.local/worker:1',
      imagePullPolicy: 'IfNotPresent',
      maxProcessNum: 8,
      msgBacklogThreshold: 10,
      activationMsgBacklogThreshold: 1,
      resources: { requests: { cpu: '100m' }, limits: { memory: '512Mi' } },
      prices: { promptPer1k: 150, completionPer1k: 600 },
      env: [{ name: 'LOG_LEVEL', value: 'debug' }],
    });
  });
});

describe('specToForm', () => {
  it('reads the snake_case spec the API prints and round-trips it', () => {
    const apiSpec = {
      type: 'remote',
      model: 'm',
      replicas: 2,
      base_url: 'http://p/v1',
      api_keys: [{ secret_name: 's', key: 'k' }],
      max_process_num: 4,
      msg_backlog_threshold: 3,
      prices: { prompt_per1k: '10', completion_per1k: '20' },
      resources: { limits: { cpu: '1' } },
      env: [{ name: 'A', value: 'b' }],
    };
    const f = specToForm('m', apiSpec);
    expect(f).toMatchObject({ name: 'm', type: 'remote', baseURL: 'http://p/v1', maxProcessNum: '4', promptPer1k: '10', cpuLimit: '1' });
    expect(formToSpec(f)).toEqual({
      type: 'remote',
      model: 'm',
      replicas: 2,
      baseURL: 'http://p/v1',
      apiKeys: [{ secretName: 's', key: 'k' }],
      maxProcessNum: 4,
      msgBacklogThreshold: 3,
      resources: { limits: { cpu: '1' } },
      prices: { promptPer1k: 10, completionPer1k: 20 },
      env: [{ name: 'A', value: 'b' }],
    });
  });

  it('reads a camelCase resource spec too', () => {
    expect(specToForm('x', { type: 'local', model: 'x', modelPath: 'package:minilm', imagePullPolicy: 'Never' })).toMatchObject({
      modelPath: 'package:minilm',
      imagePullPolicy: 'Never',
    });
  });
});

describe('validateForm', () => {
  it('accepts a valid form', () => {
    expect(validateForm(form({ name: 'echo', model: 'echo' }))).toEqual({});
  });

  it('applies the CRD rules', () => {
    const e = validateForm(
      form({
        name: 'Bad_Name',
        type: 'remote',
        model: '-x',
        minReplicas: '3',
        maxReplicas: '2',
        maxProcessNum: '2000',
        activationMsgBacklogThreshold: '1',
        replicas: 'two',
        env: [{ name: '1BAD', value: '' }],
      }),
    );
    expect(Object.keys(e).sort()).toEqual(
      ['activationMsgBacklogThreshold', 'apiKeys', 'baseURL', 'env.0', 'maxProcessNum', 'maxReplicas', 'model', 'name', 'replicas'].sort(),
    );
  });

  it('does not check the name when editing (it cannot change)', () => {
    expect(validateForm(form({ name: '', model: 'm' }), true)).toEqual({});
  });
});

describe('YAML preview', () => {
  it('prints the resource kubectl takes', () => {
    const spec = formToSpec(form({ name: 'echo', model: 'echo', apiKeys: [{ secretName: 's', key: 'k' }], cpuRequest: '100m' }));
    expect(toYaml(toResource('echo', spec))).toBe(
      [
        'apiVersion: uplion.io/v1alpha1',
        'kind: AIModel',
        'metadata:',
        '  name: echo',
        'spec:',
        '  type: local',
        '  model: echo',
        '  replicas: 1',
        '  apiKeys:',
        '  - secretName: s',
        '    key: k',
        '  resources:',
        '    requests:',
        '      cpu: 100m',
        '',
      ].join('\n'),
    );
  });

  it('quotes strings YAML would misread', () => {
    expect(toYaml({ a: 'true', b: '123', c: '', d: 'x: y', e: 'it\'s "q"', f: '#x', g: 'https://a.b/v1', h: [] })).toBe(
      'a: "true"\nb: "123"\nc: ""\nd: "x: y"\ne: "it\'s \\"q\\""\nf: "#x"\ng: https://a.b/v1\nh: []\n',
    );
  });
});
