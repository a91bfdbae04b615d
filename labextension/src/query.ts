/**
 * Pure helpers for the API's URLs and error bodies: unit-tested with `node --test`.
 */

/** The API's prefix under the server's base URL. */
export const API_PREFIX = 'flowbook/api';

/**
 * A query string from `params` in their order, skipping null, undefined and empty values:
 * `{flow: 'etl', state: '', limit: 50}` → "?flow=etl&limit=50"; "" when nothing is left.
 */
export function buildQuery(
  params: Record<string, string | number | boolean | null | undefined>
): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === '') {
      continue;
    }
    parts.push(`${encodeURIComponent(name)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length > 0 ? `?${parts.join('&')}` : '';
}

/** The API path of one run: "runs/<id>", the id escaped. */
export function runPath(id: string): string {
  return `runs/${encodeURIComponent(id)}`;
}

/**
 * The message to show for a failed API call: the server's `{"message": ...}` when the body
 * has one, else a sentence from the status; a 404 without a JSON message means that the
 * server extension is not loaded.
 */
export function apiErrorMessage(status: number, statusText: string, body: string): string {
  let message: string | null = null;
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed !== null && typeof parsed === 'object' && 'message' in parsed) {
      const value = (parsed as { message: unknown }).message;
      if (typeof value === 'string' && value.trim() !== '') {
        message = value.trim();
      }
    }
  } catch {
    // not JSON: an HTML error page from the server, or nothing
  }
  const reason = statusText ? `${status} ${statusText}` : `${status}`;
  if (message !== null) {
    return `${message} (HTTP ${reason})`;
  }
  if (status === 404) {
    return (
      `The flowbook server extension did not answer (HTTP ${reason}). Is flowbook installed ` +
      "in the Jupyter server's environment? `jupyter server extension list` should show " +
      'flowbook.jupyter.server enabled.'
    );
  }
  if (status === 403) {
    return `The server refused the request (HTTP ${reason}); reload the page to log in again.`;
  }
  return `The server answered HTTP ${reason}.`;
}
