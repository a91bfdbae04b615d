import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IRunDiff } from './comparefmt.js';
import { API_PREFIX, apiErrorMessage, buildQuery, runPath } from './query.js';
import {
  ApiResult,
  CacheClearRequest,
  ICacheClearResult,
  ICacheList,
  IFlowList,
  IRunDetails,
  IRunList,
  IRunSnapshot
} from './types.js';

/**
 * The HTTP client of flowbook's server API. Every request goes through
 * `ServerConnection.makeRequest`, which adds the server's token and XSRF header; every
 * call resolves to an `ApiResult` (failures included), so the panel shows errors instead
 * of throwing them.
 */
export class FlowbookClient {
  constructor(settings: ServerConnection.ISettings) {
    this._settings = settings;
  }

  /** `GET runs`: the runs newest first, and the names of all flows in the store. */
  listRuns(options: {
    flow?: string;
    state?: string;
    limit?: number;
  }): Promise<ApiResult<IRunList>> {
    const query = buildQuery({ flow: options.flow, state: options.state, limit: options.limit });
    return this._request<IRunList>('runs', query, { method: 'GET' });
  }

  /** `GET runs/<id>`: one run with its states, task runs, logs and parameters. */
  getRun(id: string): Promise<ApiResult<IRunDetails>> {
    return this._request<IRunDetails>(runPath(id), '', { method: 'GET' });
  }

  /** `GET runs/<id>/snapshot`: the run widget's snapshot of a stored run. */
  getRunSnapshot(id: string): Promise<ApiResult<IRunSnapshot>> {
    return this._request<IRunSnapshot>(`${runPath(id)}/snapshot`, '', { method: 'GET' });
  }

  /**
   * `GET runs/<id>/snapshot?run=1`: the run (as `getRun` gives it) and its snapshot, from one
   * read of the run on the server: what the details of a running run need at each refresh.
   */
  getRunWithSnapshot(
    id: string
  ): Promise<ApiResult<{ run: IRunDetails; snapshot: IRunSnapshot }>> {
    return this._request<{ run: IRunDetails; snapshot: IRunSnapshot }>(
      `${runPath(id)}/snapshot`,
      '?run=1',
      { method: 'GET' }
    );
  }

  /** `GET view/<name>`: a file of the run widget's front end (`run_view.js`, its CSS). */
  async getViewFile(name: string): Promise<ApiResult<string>> {
    const url = URLExt.join(this._settings.baseUrl, API_PREFIX, 'view', encodeURIComponent(name));
    try {
      const response = await ServerConnection.makeRequest(url, { method: 'GET' }, this._settings);
      const body = await response.text();
      if (!response.ok) {
        return {
          ok: false,
          status: response.status,
          message: apiErrorMessage(response.status, response.statusText, body)
        };
      }
      return { ok: true, value: body };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return { ok: false, status: 0, message: `Could not reach the Jupyter server: ${reason}` };
    }
  }

  /** `GET flows`: registered flows and flows with runs, optionally of one project. */
  listFlows(options: { project?: string } = {}): Promise<ApiResult<IFlowList>> {
    return this._request<IFlowList>('flows', buildQuery({ project: options.project }), {
      method: 'GET'
    });
  }

  /** `GET cache`: the cache entries, optionally of one flow or task. */
  listCache(options: { flow?: string; task?: string } = {}): Promise<ApiResult<ICacheList>> {
    const query = buildQuery({ flow: options.flow, task: options.task });
    return this._request<ICacheList>('cache', query, { method: 'GET' });
  }

  /** `GET diff?a=&b=`: two runs compared (`flowbook.diff.compare_runs`). */
  compareRuns(a: string, b: string): Promise<ApiResult<IRunDiff>> {
    return this._request<IRunDiff>('diff', buildQuery({ a, b }), { method: 'GET' });
  }

  /** `POST cache/clear`: deletes the given entries, the expired ones, or all. */
  clearCache(request: CacheClearRequest): Promise<ApiResult<ICacheClearResult>> {
    return this._request<ICacheClearResult>('cache/clear', '', {
      method: 'POST',
      body: JSON.stringify(request),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  private async _request<T>(path: string, query: string, init: RequestInit): Promise<ApiResult<T>> {
    const url = URLExt.join(this._settings.baseUrl, API_PREFIX, path) + query;
    let response: Response;
    let body: string;
    try {
      response = await ServerConnection.makeRequest(url, init, this._settings);
      body = await response.text();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return { ok: false, status: 0, message: `Could not reach the Jupyter server: ${reason}` };
    }
    if (!response.ok) {
      return {
        ok: false,
        status: response.status,
        message: apiErrorMessage(response.status, response.statusText, body)
      };
    }
    try {
      return { ok: true, value: JSON.parse(body) as T };
    } catch {
      return {
        ok: false,
        status: response.status,
        message: `The server's answer to ${path} is not JSON: ${body.slice(0, 200)}`
      };
    }
  }

  private readonly _settings: ServerConnection.ISettings;
}
