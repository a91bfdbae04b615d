/**
 * Pure formatting helpers (no DOM, no JupyterLab): unit-tested with `node --test`.
 */

/** A placeholder for a missing value. */
export const MISSING = '–';

/**
 * A duration in seconds, short and human: "250 ms", "4.2 s", "42 s", "3 min 5 s",
 * "2 h 10 min", "3 d 4 h"; `MISSING` for null, NaN or a negative number.
 */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return MISSING;
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 10) {
    return `${(Math.floor(seconds * 10) / 10).toFixed(1)} s`;
  }
  const total = Math.floor(seconds);
  if (total < 60) {
    return `${total} s`;
  }
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (days > 0) {
    return hours > 0 ? `${days} d ${hours} h` : `${days} d`;
  }
  if (hours > 0) {
    return minutes > 0 ? `${hours} h ${minutes} min` : `${hours} h`;
  }
  return secs > 0 ? `${minutes} min ${secs} s` : `${minutes} min`;
}

/** Parses an ISO 8601 time; null when missing or invalid. */
export function parseTime(iso: string | null | undefined): Date | null {
  if (!iso) {
    return null;
  }
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

function pad(value: number, width = 2): string {
  return String(value).padStart(width, '0');
}

/**
 * A time in the browser's time zone: "14:02:11" when it is on the same local day as
 * `now`, else "2024-01-31 14:02"; `MISSING` when missing or invalid.
 */
export function formatLocalTime(iso: string | null | undefined, now: Date = new Date()): string {
  const date = parseTime(iso);
  if (date === null) {
    return MISSING;
  }
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const sameDay =
    date.getFullYear() === now.getFullYear() &&
    date.getMonth() === now.getMonth() &&
    date.getDate() === now.getDate();
  if (sameDay) {
    return clock;
  }
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** The full local date and time, "2024-01-31 14:02:11.204", for tooltips. */
export function formatFullTime(iso: string | null | undefined): string {
  const date = parseTime(iso);
  if (date === null) {
    return MISSING;
  }
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return `${day} ${clock}.${pad(date.getMilliseconds(), 3)}`;
}

/** The timing fields shared by flow runs and task runs. */
export interface ITimed {
  start_time: string | null;
  end_time: string | null;
  duration_s: number | null;
}

/**
 * A run's duration in seconds: the server's `duration_s`, else end - start, else (a run
 * still going) now - start; null when it has not started.
 */
export function runDuration(run: ITimed, now: Date = new Date()): number | null {
  if (run.duration_s !== null && run.duration_s !== undefined) {
    return run.duration_s;
  }
  const start = parseTime(run.start_time);
  if (start === null) {
    return null;
  }
  const end = parseTime(run.end_time) ?? now;
  return Math.max(0, (end.getTime() - start.getTime()) / 1000);
}

/** A size in bytes: "512 B", "1.5 KB", "12.0 MB"; `MISSING` for null. */
export function formatBytes(size: number | null | undefined): string {
  if (size === null || size === undefined || !Number.isFinite(size) || size < 0) {
    return MISSING;
  }
  if (size < 1024) {
    return `${Math.round(size)} B`;
  }
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'DEBUG',
  20: 'INFO',
  30: 'WARNING',
  40: 'ERROR',
  50: 'CRITICAL'
};

/** A log level as a name: 20 → "INFO", "warning" → "WARNING", 25 → "LEVEL 25". */
export function levelName(level: string | number | null | undefined): string {
  if (level === null || level === undefined || level === '') {
    return MISSING;
  }
  if (typeof level === 'number') {
    return LEVEL_NAMES[level] ?? `LEVEL ${level}`;
  }
  return level.toUpperCase();
}

/** A parameter value as one line: strings as they are, anything else as JSON. */
export function formatValue(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  if (value === undefined) {
    return 'undefined';
  }
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Cuts `text` to at most `max` characters, ending with "…" when cut. */
export function truncate(text: string, max: number): string {
  if (text.length <= max) {
    return text;
  }
  return `${text.slice(0, Math.max(0, max - 1))}…`;
}
