// Create or edit an AIModel from a form; the YAML preview is the resource the form makes.

import { type FormEvent, useEffect, useMemo, useState } from 'react';
import { type EnvVar, type KeyRef, type ModelForm, emptyForm, formToSpec, specToForm, toResource, validateForm } from '../lib/aimodelForm';
import { toYaml } from '../lib/yaml';
import { ErrorBox, Field, Loading, errorText, useAsync } from '../ui/common';
import { Link, navigate } from '../ui/router';
import { useSession } from '../ui/session';

type Setter = <K extends keyof ModelForm>(k: K, v: ModelForm[K]) => void;

function Text({ f, set, k, label, errors, hint }: { f: ModelForm; set: Setter; k: keyof ModelForm; label: string; errors: Record<string, string>; hint?: string }) {
  return (
    <Field label={label} error={errors[k]} hint={hint}>
      <input value={f[k] as string} onChange={(e) => set(k, e.target.value as never)} aria-invalid={!!errors[k]} data-testid={`model-${k}`} />
    </Field>
  );
}

export default function ModelEditor({ name }: { name?: string }) {
  const { client } = useSession();
  const editing = name !== undefined;
  const existing = useAsync(async () => (editing ? client.getModel(name) : null), [name]);
  const [form, setForm] = useState<ModelForm>(emptyForm);
  const [touched, setTouched] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');

  useEffect(() => {
    if (existing.data) setForm(specToForm(existing.data.name, existing.data.spec));
  }, [existing.data]);

  const set: Setter = (k, v) => {
    setTouched(true);
    setForm((f) => ({ ...f, [k]: v }));
  };
  const errors = useMemo(() => validateForm(form, editing), [form, editing]);
  const spec = useMemo(() => formToSpec(form), [form]);
  const yaml = useMemo(() => toYaml(toResource(form.name || '<name>', spec, existing.data?.namespace)), [form.name, spec, existing.data]);
  const shownErrors = touched ? errors : {};

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (Object.keys(errors).length) {
      setError('Fix the marked fields first.');
      return;
    }
    setBusy(true);
    setError('');
    try {
      if (editing) await client.updateModel(name, spec);
      else await client.createModel(form.name, spec);
      navigate('/models');
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  const setKeys = (keys: KeyRef[]) => set('apiKeys', keys);
  const setEnv = (env: EnvVar[]) => set('env', env);

  if (editing && existing.loading && !existing.data) return <Loading what="Loading the model" />;
  return (
    <section>
      <p>
        <Link to="/models">← Models</Link>
      </p>
      <h1>{editing ? `Edit ${name}` : 'New model'}</h1>
      <ErrorBox error={existing.error} onRetry={existing.reload} />
      <div className="split">
        <form className="card" onSubmit={submit} data-testid="model-form" aria-label="Model spec" noValidate>
          <div className="grid">
            {editing ? (
              <Field label="Name">
                <input value={form.name} readOnly />
              </Field>
            ) : (
              <Text f={form} set={set} k="name" label="Name" errors={shownErrors} hint="The resource name (a DNS label)." />
            )}
            <Field label="Type">
              <select value={form.type} onChange={(e) => set('type', e.target.value as ModelForm['type'])} data-testid="model-type">
                <option value="local">local (the worker runs it)</option>
                <option value="remote">remote (OpenAI-compatible provider)</option>
                <option value="echo">echo (built-in test model: streams the prompt back)</option>
              </select>
            </Field>
            <Text f={form} set={set} k="model" label="Model name clients send" errors={shownErrors} />
            <Text f={form} set={set} k="replicas" label="Replicas" errors={shownErrors} />
            <Text f={form} set={set} k="minReplicas" label="Min replicas" errors={shownErrors} />
            <Text f={form} set={set} k="maxReplicas" label="Max replicas" errors={shownErrors} />
            <Text f={form} set={set} k="maxProcessNum" label="Requests per worker at once" errors={shownErrors} />
            <Text f={form} set={set} k="msgBacklogThreshold" label="Backlog per replica (autoscaling)" errors={shownErrors} hint="Set to scale with KEDA." />
            <Text f={form} set={set} k="activationMsgBacklogThreshold" label="Activation backlog" errors={shownErrors} />
          </div>
          {form.type === 'remote' ? (
            <fieldset className="grid">
              <legend>Provider</legend>
              <Text f={form} set={set} k="baseURL" label="Base URL" errors={shownErrors} />
              <Text f={form} set={set} k="upstreamModel" label="Upstream model" errors={shownErrors} />
            </fieldset>
          ) : (
            <fieldset className="grid">
              <legend>Local model</legend>
              <Text f={form} set={set} k="modelPath" label="Model path" errors={shownErrors} hint="A folder in the image or package:<name>." />
            </fieldset>
          )}
          <fieldset>
            <legend>Provider keys (Secret references)</legend>
            {shownErrors.apiKeys && (
              <p className="field-error" role="alert">
                {shownErrors.apiKeys}
              </p>
            )}
            {form.apiKeys.map((k, i) => (
              <div className="row" key={i}>
                <Field label={`Secret ${i + 1}`} error={shownErrors[`apiKeys.${i}`]}>
                  <input value={k.secretName} onChange={(e) => setKeys(form.apiKeys.map((x, j) => (j === i ? { ...x, secretName: e.target.value } : x)))} />
                </Field>
                <Field label={`Key ${i + 1}`}>
                  <input value={k.key} onChange={(e) => setKeys(form.apiKeys.map((x, j) => (j === i ? { ...x, key: e.target.value } : x)))} />
                </Field>
                <button type="button" onClick={() => setKeys(form.apiKeys.filter((_, j) => j !== i))} aria-label={`Remove secret ${i + 1}`}>
                  Remove
                </button>
              </div>
            ))}
            <button type="button" onClick={() => setKeys([...form.apiKeys, { secretName: '', key: '' }])}>
              Add a key
            </button>
          </fieldset>
          <fieldset className="grid">
            <legend>Image and resources</legend>
            <Text f={form} set={set} k="image" label="Image" errors={shownErrors} />
            <Field label="Pull policy">
              <select value={form.imagePullPolicy} onChange={(e) => set('imagePullPolicy', e.target.value as ModelForm['imagePullPolicy'])}>
                <option value="">default</option>
                <option>Always</option>
                <option>IfNotPresent</option>
                <option>Never</option>
              </select>
            </Field>
            <Text f={form} set={set} k="cpuRequest" label="CPU request" errors={shownErrors} />
            <Text f={form} set={set} k="memoryRequest" label="Memory request" errors={shownErrors} />
            <Text f={form} set={set} k="cpuLimit" label="CPU limit" errors={shownErrors} />
            <Text f={form} set={set} k="memoryLimit" label="Memory limit" errors={shownErrors} />
          </fieldset>
          <fieldset className="grid">
            <legend>Prices (micro-credits per 1,000 tokens)</legend>
            <Text f={form} set={set} k="promptPer1k" label="Prompt" errors={shownErrors} />
            <Text f={form} set={set} k="completionPer1k" label="Completion" errors={shownErrors} />
          </fieldset>
          <fieldset>
            <legend>Environment</legend>
            {form.env.map((v, i) => (
              <div className="row" key={i}>
                <Field label={`Name ${i + 1}`} error={shownErrors[`env.${i}`]}>
                  <input value={v.name} onChange={(e) => setEnv(form.env.map((x, j) => (j === i ? { ...x, name: e.target.value } : x)))} />
                </Field>
                <Field label={`Value ${i + 1}`}>
                  <input value={v.value} onChange={(e) => setEnv(form.env.map((x, j) => (j === i ? { ...x, value: e.target.value } : x)))} />
                </Field>
                <button type="button" onClick={() => setEnv(form.env.filter((_, j) => j !== i))} aria-label={`Remove variable ${i + 1}`}>
                  Remove
                </button>
              </div>
            ))}
            <button type="button" onClick={() => setEnv([...form.env, { name: '', value: '' }])}>
              Add a variable
            </button>
          </fieldset>
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="primary" disabled={busy} data-testid="model-submit">
            {editing ? 'Save' : 'Create model'}
          </button>
        </form>
        <aside className="card">
          <h2>YAML</h2>
          <p className="muted">The resource this form makes (what <code>kubectl apply</code> takes).</p>
          <pre className="yaml" data-testid="model-yaml" tabIndex={0} aria-label="YAML preview">
            {yaml}
          </pre>
        </aside>
      </div>
    </section>
  );
}
