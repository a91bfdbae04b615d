/**
 * The run widget's renderer in the panel: `run_view.js`, the anywidget ESM module that draws
 * a run in a notebook, fetched from the server (`GET view/run_view.js`, with its CSS) and
 * imported once from a Blob URL. The panel gives it a small model over the snapshot of a
 * stored run (`GET runs/<id>/snapshot`, what `%flowbook show` renders): the same graph,
 * node details, logs and timeline as the live widget, from the same code.
 */
import { ApiResult, IRunSnapshot } from './types.js';

/** The traits the renderer reads (docs/widget-protocol.md). */
export const VIEW_TRAITS = ['header', 'graph', 'logs', 'logs_total', 'timeline_json'] as const;

type Trait = (typeof VIEW_TRAITS)[number];
type Listener = () => void;

/** What `render` of an anywidget module is given as `model`. */
export interface IViewModel {
  get(name: string): unknown;
  on(event: string, fn: Listener): void;
  off(event?: string | null, fn?: Listener | null): void;
  send(content: unknown): void;
}

/** The renderer module: anywidget's `{ render({ model, el }) }`, returning a cleanup. */
export interface IViewModule {
  render(props: { model: IViewModel; el: HTMLElement }): (() => void) | void;
}

/** The traits of a snapshot; the timeline is JSON text, as the widget syncs it. */
export function snapshotTraits(snapshot: IRunSnapshot): Record<Trait, unknown> {
  return {
    header: snapshot.header ?? {},
    graph: snapshot.graph ?? {},
    logs: snapshot.logs ?? [],
    logs_total: snapshot.logs_total ?? (snapshot.logs ?? []).length,
    timeline_json: JSON.stringify(snapshot.timeline ?? {})
  };
}

/**
 * A model over a stored run's snapshot: `set` replaces the traits and tells the renderer
 * which changed (`change:<trait>`). The panel cannot cancel a stored run: `send` is ignored.
 */
export class SnapshotModel implements IViewModel {
  get(name: string): unknown {
    return this._traits.get(name);
  }

  on(event: string, fn: Listener): void {
    let set = this._listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(fn);
  }

  off(event?: string | null, fn?: Listener | null): void {
    if (!event) {
      this._listeners.clear();
    } else if (!fn) {
      this._listeners.delete(event);
    } else {
      this._listeners.get(event)?.delete(fn);
    }
  }

  send(content: unknown): void {
    void content; // a stored run has nothing to send to (no Cancel)
  }

  /** Sets the traits of a snapshot; returns the names of those that changed. */
  set(snapshot: IRunSnapshot): string[] {
    const changed: string[] = [];
    const traits = snapshotTraits(snapshot);
    for (const name of VIEW_TRAITS) {
      const value = traits[name];
      const text = JSON.stringify(value);
      if (this._texts.get(name) === text) {
        continue;
      }
      this._texts.set(name, text);
      this._traits.set(name, value);
      changed.push(name);
    }
    for (const name of changed) {
      for (const fn of [...(this._listeners.get(`change:${name}`) ?? [])]) {
        fn();
      }
    }
    return changed;
  }

  private readonly _traits = new Map<string, unknown>();
  private readonly _texts = new Map<string, string>();
  private readonly _listeners = new Map<string, Set<Listener>>();
}

const STYLE_ID = 'flowbook-run-view-css';
let loading: Promise<ApiResult<IViewModule>> | null = null;

/**
 * The renderer module, loaded once per page (its CSS added to the document); a failed load
 * is retried on the next call.
 */
export function loadRunView(
  fetchText: (name: string) => Promise<ApiResult<string>>
): Promise<ApiResult<IViewModule>> {
  if (loading === null) {
    loading = importRunView(fetchText).then(result => {
      if (!result.ok) {
        loading = null;
      }
      return result;
    });
  }
  return loading;
}

async function importRunView(
  fetchText: (name: string) => Promise<ApiResult<string>>
): Promise<ApiResult<IViewModule>> {
  const [js, css] = await Promise.all([fetchText('run_view.js'), fetchText('run_view.css')]);
  if (!js.ok) {
    return js;
  }
  if (css.ok && document.getElementById(STYLE_ID) === null) {
    const style = document.createElement('style');
    style.id = STYLE_ID;
    style.textContent = css.value;
    document.head.append(style);
  }
  const url = URL.createObjectURL(new Blob([js.value], { type: 'text/javascript' }));
  try {
    const module = (await import(/* webpackIgnore: true */ url)) as { default?: IViewModule };
    if (!module.default || typeof module.default.render !== 'function') {
      return { ok: false, status: 0, message: 'run_view.js has no render function' };
    }
    return { ok: true, value: module.default };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, status: 0, message: `Could not load the run view: ${reason}` };
  } finally {
    URL.revokeObjectURL(url);
  }
}
