/**
 * Pure helpers over cache entries: unit-tested with `node --test`.
 */
import { parseTime } from './format.js';

/** The fields that identify and order a cache entry. */
export interface ICacheKeyed {
  task_key: string;
  key: string;
  task_name: string;
  created: string | null;
}

/** A cache entry's identity: its task key and its key (the pair the clear API takes). */
export function cacheEntryKey(entry: ICacheKeyed): string {
  return `${entry.task_key}\u0000${entry.key}`;
}

/** The entries newest first, then by task name; entries without a time come last. */
export function sortCacheEntries<T extends ICacheKeyed>(entries: readonly T[]): T[] {
  const keyed = entries.map((entry, index) => ({
    entry,
    index,
    time: parseTime(entry.created)?.getTime() ?? Number.NEGATIVE_INFINITY
  }));
  keyed.sort((a, b) => {
    if (a.time !== b.time) {
      return a.time > b.time ? -1 : 1;
    }
    const byName = a.entry.task_name.localeCompare(b.entry.task_name);
    return byName !== 0 ? byName : a.index - b.index;
  });
  return keyed.map(item => item.entry);
}
