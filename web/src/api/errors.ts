// Errors from uplion's edge: OpenAI-style JSON {"error": {"message", "type", "code"}} with an HTTP status.

export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string;

  constructor(status: number, message: string, type = '', code = '') {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
    this.code = code;
  }

  /** A sentence for the person at the screen: what happened and what to do. */
  get friendly(): string {
    return friendlyMessage(this.status, this.message, this.code);
  }
}

/** The ApiError a failed response's body describes (any body: JSON error, plain text or nothing). */
export function errorFromBody(status: number, bodyText: string, statusText = ''): ApiError {
  let message = '';
  let type = '';
  let code = '';
  try {
    const parsed: unknown = JSON.parse(bodyText);
    const err = (parsed as { error?: unknown } | null)?.error;
    if (err && typeof err === 'object') {
      const e = err as Record<string, unknown>;
      message = typeof e.message === 'string' ? e.message : '';
      type = typeof e.type === 'string' ? e.type : '';
      code = typeof e.code === 'string' ? e.code : e.code == null ? '' : String(e.code);
    } else if (parsed && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string') {
      message = (parsed as { message: string }).message; // a bare gRPC-gateway style status
    }
  } catch {
    message = bodyText.trim().slice(0, 300);
  }
  if (!message) message = statusText || `HTTP ${status}`;
  return new ApiError(status, message, type, code);
}

/** What a status means to the user; the server's message is kept after it. */
export function friendlyMessage(status: number, message: string, code = ''): string {
  const detail = message ? ` (${message})` : '';
  switch (status) {
    case 0:
      return `The server could not be reached${detail}. Check your connection and try again.`;
    case 401:
      return code === 'invalid_api_key' || /api key/i.test(message)
        ? `The API key was refused${detail}. Paste a valid key or create a new chat key.`
        : `You are not signed in or your session expired${detail}. Sign in again.`;
    case 403:
      return `Not allowed${detail}.`;
    case 404:
      return `Not found${detail}.`;
    case 429:
      return `Rate limit or quota reached${detail}. Wait a moment and retry, or ask an admin for more quota.`;
    case 503:
      return `The service or model is not available right now${detail}. Retry shortly.`;
    default:
      return status >= 500 ? `The server failed${detail}. Retry shortly.` : message || `Request failed (HTTP ${status}).`;
  }
}
