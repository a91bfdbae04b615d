/**
 * The run links of `%flowbook runs` (flowbook/jupyter/tables.py): an anchor
 * `<a class="fb-run-link" href="#flowbook-run=<id>" data-flowbook-run="<id>">name</a>`. The
 * extension catches a click on one anywhere in the page and opens that run in the panel.
 * The run id is read from `data-flowbook-run`, else from the href (an untrusted notebook's
 * sanitized output keeps the href but may drop data attributes). Pure (no DOM types beyond
 * strings): unit-tested with `node --test`.
 */

/** The href prefix of a run link. */
export const RUN_LINK_HASH = '#flowbook-run=';

/** The anchors a click on which opens a run. */
export const RUN_LINK_SELECTOR = `a[data-flowbook-run], a[href^="${RUN_LINK_HASH}"]`;

/** A run id as the server takes it (a uuid's characters); anything else is not a run link. */
const RUN_ID = /^[0-9A-Za-z-]{1,64}$/;

/** The run id of a link from its `data-flowbook-run` and its `href` attribute; null if none. */
export function runIdOfLink(
  data: string | null | undefined,
  href: string | null | undefined
): string | null {
  const fromData = (data ?? '').trim();
  if (RUN_ID.test(fromData)) {
    return fromData;
  }
  const link = href ?? '';
  const at = link.indexOf(RUN_LINK_HASH);
  if (at < 0) {
    return null;
  }
  let id = link.slice(at + RUN_LINK_HASH.length);
  try {
    id = decodeURIComponent(id);
  } catch {
    return null;
  }
  return RUN_ID.test(id) ? id : null;
}
