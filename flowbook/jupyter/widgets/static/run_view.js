// flowbook's run widget, front end (an anywidget ESM module; contract: docs/widget-protocol.md).
//
// The kernel computes everything (counts, layout, lanes, previews); this module only draws.
// Four traits feed four parts of the view: `header`, `graph` (with the node detail and, from
// `logs`, the tail under it), `logs` and `timeline`. A trait change marks its parts stale and
// one redraw per animation frame updates the stale parts that are visible; a hidden pane is
// redrawn when its tab is shown. Updates arrive up to ten times a second, so the graph is
// patched in place while its shape is unchanged, and the log list only appends and trims.

const SVG_NS = "http://www.w3.org/2000/svg";

// States with a colour of their own in the palette (run_view.css: --fb-state-<name>, and
// --fb-state-<name>-text for text on it); state types cover names not listed here.
const PALETTE_STATES = new Set([
  "completed", "cached", "failed", "crashed", "timedout", "cancelled", "cancelling", "running",
  "pending", "scheduled", "retrying", "awaitingretry", "paused",
]);
const TYPE_PALETTE = {
  COMPLETED: "completed", FAILED: "failed", CRASHED: "crashed", CANCELLED: "cancelled",
  CANCELLING: "cancelling", RUNNING: "running", PENDING: "pending", SCHEDULED: "scheduled",
  PAUSED: "paused",
};

// The order of the per-state counts and of the segments of a node's state-mix bar.
const STATE_ORDER = [
  "Completed", "Cached", "Running", "Retrying", "AwaitingRetry", "Pending", "Scheduled",
  "Paused", "Cancelling", "Failed", "Crashed", "TimedOut", "Cancelled",
];

// Log levels: choosing one in the filter shows it and the levels above it. Printed output
// (PRINT, STDERR) counts as INFO.
const FILTER_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const LEVEL_RANK = {
  DEBUG: 10, INFO: 20, PRINT: 20, STDERR: 20, WARNING: 30, WARN: 30,
  ERROR: 40, CRITICAL: 50, FATAL: 50,
};

// The order of the segments of the header's progress bar: finished runs, then the ones under
// way, then the ones waiting.
const PROGRESS_ORDER = [
  "Completed", "Cached", "Failed", "Crashed", "TimedOut", "Cancelled", "Cancelling", "Running",
  "Retrying", "AwaitingRetry", "Paused", "Pending", "Scheduled",
];

const TAIL_LINES = 5;
const PARTS = ["header", "graph", "tail", "logs", "timeline"];
// Which pane a part lives in (the header is always visible).
const PART_PANE = {
  header: null, graph: "graph", tail: "graph", logs: "logs", timeline: "timeline",
};
const TABS = [["graph", "Graph"], ["logs", "Logs"], ["timeline", "Timeline"]];

let instances = 0;

// ---------------------------------------------------------------------------------------------
// Small helpers

// [fill, text on that fill] of a state, as CSS values (the palette's custom properties).
function stateColours(name, type) {
  const lower = String(name || "").toLowerCase();
  const key = PALETTE_STATES.has(lower) ? lower : TYPE_PALETTE[type] || "unknown";
  return [`var(--fb-state-${key})`, `var(--fb-state-${key}-text)`];
}

function stateRank(name) {
  const i = STATE_ORDER.indexOf(name);
  return i < 0 ? STATE_ORDER.length : i;
}

// Count entries with a positive count, in display order (known states first, then by name).
function orderedCounts(counts) {
  return Object.entries(counts || {})
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => stateRank(a) - stateRank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

function levelRank(name) {
  const rank = LEVEL_RANK[name];
  if (rank !== undefined) return rank;
  const custom = /^Level (\d+)$/.exec(name || "");
  return custom ? Number(custom[1]) : LEVEL_RANK.INFO;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return node;
}

function appendAll(node, children) {
  for (const child of children || []) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// An HTML element.
function h(tag, attrs, children) {
  return appendAll(setAttrs(document.createElement(tag), attrs), children);
}

// An SVG element.
function s(tag, attrs, children) {
  return appendAll(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

// A wall-clock time with milliseconds, in the browser's time zone.
function clock(ts) {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    pad(d.getMilliseconds(), 3);
}

// "50 ms", "1.2 s", "1 min 05 s", "2 h 03 min" (the static view in html.py uses the same
// format).
function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  let sec = Math.max(0, seconds);
  const ms = Math.round(sec * 1000);
  if (ms < 1000) return `${ms} ms`;
  sec = Math.max(sec, 1); // 0.9996 s: "1.0 s", not "0.9 s"
  if (sec < 60) return `${(Math.floor(sec * 10) / 10).toFixed(1)} s`;
  const whole = Math.floor(sec);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
  return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
}

// A label of the timeline's axis: an offset from the run's start.
function formatTick(seconds) {
  if (seconds < 1 && Math.round(seconds * 1000) < 1000) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${Number(seconds.toFixed(1))} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) {
    const rest = whole % 60;
    return rest ? `${Math.floor(whole / 60)} min ${pad(rest)} s` : `${whole / 60} min`;
  }
  const rest = Math.floor((whole % 3600) / 60);
  return rest ? `${Math.floor(whole / 3600)} h ${pad(rest)} min` : `${whole / 3600} h`;
}

const TICK_STEPS = [
  0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400,
];

function tickStep(span, maxTicks) {
  for (const step of TICK_STEPS) if (span / step <= maxTicks) return step;
  const last = TICK_STEPS[TICK_STEPS.length - 1];
  return last * Math.ceil(span / last / maxTicks);
}

function truncate(text, maxChars) {
  const str = String(text ?? "");
  if (str.length <= maxChars) return str;
  return maxChars <= 1 ? "…" : `${str.slice(0, maxChars - 1)}…`;
}

function sameLogLine(a, b) {
  if (!a || !b) return false;
  for (let i = 0; i < 5; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Paints an SVG shape in a state's colour (a style: SVG attributes take no var()).
function paint(node, colour, stroke = false) {
  node.style.fill = colour;
  if (stroke) node.style.stroke = colour;
}

function stateBadge(name, type) {
  const [fill, fg] = stateColours(name, type);
  return h("span", {
    class: "fb-badge",
    "data-state": name || "",
    style: `background:${fill};color:${fg}`,
    text: name || "?",
  });
}

// ---------------------------------------------------------------------------------------------
// Graph geometry

function isBeyond(a, b, axis) {
  return axis === "y" ? b.y >= a.y + a.h - 1 : b.x >= a.x + a.w - 1;
}

// Whether the layout flows top to bottom ("TB") or left to right ("LR"): the axis along which
// most edges point from a node to one wholly past it. The model gives positions only.
function graphDirection(edges, byKey) {
  let down = 0;
  let right = 0;
  for (const edge of edges) {
    const a = byKey.get(edge.from);
    const b = byKey.get(edge.to);
    if (!a || !b) continue;
    if (isBeyond(a, b, "y")) down++;
    if (isBeyond(a, b, "x")) right++;
  }
  return right > down ? "LR" : "TB";
}

// A cubic curve from the side of `a` facing the flow to the opposite side of `b`.
function edgePath(a, b, direction) {
  if (direction === "LR") {
    const sx = a.x + a.w, sy = a.y + a.h / 2, ex = b.x, ey = b.y + b.h / 2;
    const c = Math.max(24, Math.abs(ex - sx) / 2);
    return `M${sx},${sy} C${sx + c},${sy} ${ex - c},${ey} ${ex},${ey}`;
  }
  const sx = a.x + a.w / 2, sy = a.y + a.h, ex = b.x + b.w / 2, ey = b.y;
  const c = Math.max(20, Math.abs(ey - sy) / 2);
  return `M${sx},${sy} C${sx},${sy + c} ${ex},${ey - c} ${ex},${ey}`;
}

// Through the points of a route the layout found around the nodes: straight along a row, an
// S-curve between columns (its control points stay between the two points' x, where the
// layout leaves no node), so the edge passes no node it does not connect.
function routedPath(points) {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [px, py] = points[i - 1];
    const [qx, qy] = points[i];
    if (py === qy) {
      d += ` L${qx},${qy}`;
    } else {
      const mx = (px + qx) / 2;
      d += ` C${mx},${py} ${mx},${qy} ${qx},${qy}`;
    }
  }
  return d;
}

function validRoute(points) {
  return Array.isArray(points) && points.length >= 2 && points.every(
    (p) => Array.isArray(p) && p.length === 2 && p.every(Number.isFinite),
  );
}

// Changes in these fields need a new SVG; anything else (states, counts) is patched in place.
function graphShape(graph) {
  const parts = [graph.width, graph.height];
  for (const n of graph.nodes || []) {
    parts.push(n.key, n.kind, n.x, n.y, n.w, n.h, n.label, n.parent);
  }
  for (const e of graph.edges || []) parts.push(e.from, e.to, e.kind, e.points);
  return JSON.stringify(parts);
}

// Flow boxes outermost first, so that inner boxes are drawn over the ones enclosing them.
function flowDepth(node, byKey) {
  let depth = 0;
  for (let p = node.parent; p !== null && p !== undefined && depth < 100; depth++) {
    const parent = byKey.get(p);
    p = parent ? parent.parent : null;
  }
  return depth;
}

// ---------------------------------------------------------------------------------------------
// The view

class RunView {
  constructor(model, el) {
    this.model = model;
    this.uid = `fb-run-${++instances}-${Math.random().toString(36).slice(2, 8)}`;
    this.tab = "graph";
    this.stale = new Set(PARTS);
    this.frame = null; // the pending redraw, if any
    const raf = typeof requestAnimationFrame === "function";
    this.requestFrame = raf ? (fn) => requestAnimationFrame(fn) : (fn) => setTimeout(fn, 16);
    this.cancelFrame = raf ? (id) => cancelAnimationFrame(id) : (id) => clearTimeout(id);
    this.headerAt = Date.now() / 1000; // when the current header arrived
    this.cancelClicked = false;
    this.selected = null; // the key of the node whose detail is open
    this.nodes = new Map(); // key -> node of the current graph
    this.nodeViews = new Map(); // key -> the SVG elements drawing it
    this.edgeViews = [];
    this.graphShapeKey = null;
    this.detailKey = null;
    this.detailSig = null;
    this.followLogs = true;
    this.logCursor = null; // the last log line seen ({seq, line}), to append the next ones
    this.taskNames = new Set();
    this.timelineWidth = 0;

    this.build(el);

    this.listeners = [];
    const watch = (trait, parts, before) => {
      const fn = () => {
        if (before) before();
        this.invalidate(parts);
      };
      model.on(`change:${trait}`, fn);
      this.listeners.push([`change:${trait}`, fn]);
    };
    watch("header", ["header"], () => { this.headerAt = Date.now() / 1000; });
    watch("graph", ["graph"]);
    watch("logs", ["logs", "tail"]);
    watch("logs_total", ["logs"]);
    watch("timeline_json", ["timeline"]);

    this.flush();
    this.timer = setInterval(() => this.tick(), 1000);
    if (typeof ResizeObserver !== "undefined") {
      this.resizeObserver = new ResizeObserver(() => {
        if (this.tab === "timeline" && this.timelineScroll.clientWidth !== this.timelineWidth) {
          this.invalidate(["timeline"]);
        }
      });
      this.resizeObserver.observe(this.timelineScroll);
    }
  }

  destroy() {
    for (const [event, fn] of this.listeners) this.model.off(event, fn);
    clearInterval(this.timer);
    if (this.frame !== null) this.cancelFrame(this.frame);
    if (this.resizeObserver) this.resizeObserver.disconnect();
    this.root.remove();
  }

  // --- scheduling ----------------------------------------------------------------------------

  invalidate(parts) {
    for (const part of parts) this.stale.add(part);
    if (this.frame !== null) return;
    this.frame = this.requestFrame(() => {
      this.frame = null;
      this.flush();
    });
  }

  // Redraw the stale parts that can be seen; the others stay stale until their tab is shown.
  // Called from the scheduled frame, and directly after a user action (no frame's delay).
  flush() {
    if (this.frame !== null) {
      this.cancelFrame(this.frame);
      this.frame = null;
    }
    for (const part of PARTS) {
      if (!this.stale.has(part)) continue;
      const pane = PART_PANE[part];
      if (pane !== null && pane !== this.tab) continue;
      this.stale.delete(part);
      try {
        this.draw(part);
      } catch (err) {
        console.error(`flowbook run view: drawing the ${part} failed`, err);
      }
    }
  }

  draw(part) {
    if (part === "header") this.renderHeader();
    else if (part === "graph") this.renderGraph();
    else if (part === "tail") this.renderTail();
    else if (part === "logs") this.renderLogs();
    else this.renderTimeline();
  }

  header() {
    return this.model.get("header") || {};
  }

  // The timeline comes as JSON text (see docs/widget-protocol.md); parsed once per change.
  timeline() {
    const text = this.model.get("timeline_json") || "{}";
    if (text !== this.timelineText) {
      this.timelineText = text;
      try {
        this.timelineData = JSON.parse(text);
      } catch {
        this.timelineData = {};
      }
    }
    return this.timelineData;
  }

  // The kernel's clock now: its time at the snapshot plus the time since the snapshot came.
  now() {
    const hd = this.header();
    const local = Date.now() / 1000;
    return typeof hd.now === "number" ? hd.now + (local - this.headerAt) : local;
  }

  isRunning() {
    const hd = this.header();
    return typeof hd.start === "number" && (hd.end === null || hd.end === undefined);
  }

  tick() {
    if (!this.isRunning()) return;
    this.renderElapsed();
    const tl = this.timeline();
    if (this.tab === "timeline" && (tl.end === null || tl.end === undefined)) {
      this.invalidate(["timeline"]);
    }
  }

  // --- the skeleton, built once --------------------------------------------------------------

  build(el) {
    this.root = h("div", { class: "fb-run" });

    this.flowEl = h("span", { class: "fb-flow" });
    this.runNameEl = h("span", { class: "fb-run-name" });
    this.stateEl = h("span", { class: "fb-state fb-badge" });
    this.elapsedEl = h("span", { class: "fb-elapsed" });
    this.tagsEl = h("span", { class: "fb-tags" });
    this.countsEl = h("span", { class: "fb-counts" });
    this.progressText = h("span", { class: "fb-progress-text" });
    this.progressTrack = h("span", { class: "fb-progress-track", "aria-hidden": "true" });
    this.progressEl = h("span", { class: "fb-progress" }, [this.progressText, this.progressTrack]);
    // The task runner's dashboard (a Dask runner's, once it has connected).
    this.dashboardEl = h("a", {
      class: "fb-dashboard", target: "_blank", rel: "noopener", text: "Dask dashboard",
      hidden: true,
    });
    this.cancelBtn = h("button", { class: "fb-cancel", type: "button", text: "Cancel" });
    this.cancelBtn.addEventListener("click", () => {
      if (this.cancelBtn.disabled) return;
      this.cancelClicked = true;
      this.renderCancel(this.header());
      this.model.send({ type: "cancel" });
    });
    this.headerEl = h("div", { class: "fb-header" }, [
      this.flowEl, this.runNameEl, this.stateEl, this.elapsedEl, this.tagsEl, this.countsEl,
      this.progressEl, this.dashboardEl,
    ]);
    this.messageEl = h("div", { class: "fb-message", hidden: true });

    // Tabs and panes.
    this.tabButtons = {};
    this.panes = {};
    const tabBar = h("div", { class: "fb-tabs", role: "tablist" });
    for (const [name, title] of TABS) {
      const button = h("button", {
        class: "fb-tab", type: "button", role: "tab", "data-tab": name, text: title,
      });
      button.addEventListener("click", () => this.showTab(name));
      tabBar.append(button);
      this.tabButtons[name] = button;
      this.panes[name] = h("div", { class: "fb-pane", role: "tabpanel", "data-pane": name });
    }

    this.buildGraphPane(this.panes.graph);
    this.buildLogsPane(this.panes.logs);
    this.buildTimelinePane(this.panes.timeline);

    appendAll(this.root, [this.headerEl, this.messageEl, tabBar, ...Object.values(this.panes)]);
    el.append(this.root);
    this.showTab(this.tab, false);
  }

  showTab(name, redraw = true) {
    this.tab = name;
    for (const [tab, button] of Object.entries(this.tabButtons)) {
      const active = tab === name;
      button.classList.toggle("fb-active", active);
      button.setAttribute("aria-selected", String(active));
      this.panes[tab].hidden = !active;
    }
    if (redraw) this.flush();
  }

  buildGraphPane(pane) {
    this.graphScroll = h("div", { class: "fb-graph-scroll" });
    this.graphEmpty = h("div", { class: "fb-empty", text: "No task runs yet.", hidden: true });
    this.detailEl = h("div", { class: "fb-detail", hidden: true });
    this.tailEl = h("div", { class: "fb-tail" });
    appendAll(pane, [
      h("div", { class: "fb-graph-row" }, [
        h("div", { class: "fb-graph-main" }, [this.graphEmpty, this.graphScroll]),
        this.detailEl,
      ]),
      this.tailEl,
    ]);

    // One listener for every node, whatever SVG is current.
    const nodeKey = (event) => {
      const target = event.target instanceof Element ? event.target.closest(".fb-node") : null;
      return target ? target.getAttribute("data-key") : null;
    };
    this.graphScroll.addEventListener("click", (event) => {
      const key = nodeKey(event);
      if (key !== null) this.select(key === this.selected ? null : key);
    });
    this.graphScroll.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      const key = nodeKey(event);
      if (key === null) return;
      event.preventDefault();
      this.select(key === this.selected ? null : key);
    });
  }

  buildLogsPane(pane) {
    this.taskSelect = h("select", { class: "fb-filter-task", "aria-label": "task" });
    this.levelSelect = h("select", { class: "fb-filter-level", "aria-label": "level" });
    for (const level of FILTER_LEVELS) {
      this.levelSelect.append(h("option", { value: level, text: level }));
    }
    this.levelSelect.value = "DEBUG";
    this.setTaskOptions();
    const refilter = () => {
      this.logCursor = null;
      this.followLogs = true;
      this.stale.add("logs");
      this.flush();
    };
    this.taskSelect.addEventListener("change", refilter);
    this.levelSelect.addEventListener("change", refilter);

    this.logNote = h("span", { class: "fb-log-note" });
    this.logEmpty = h("div", { class: "fb-empty", text: "No log lines.", hidden: true });
    this.logList = h("div", { class: "fb-log-list" });
    this.logList.addEventListener("scroll", () => {
      const list = this.logList;
      this.followLogs = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    });
    appendAll(pane, [
      h("div", { class: "fb-log-filters" }, [
        h("label", {}, ["Task ", this.taskSelect]),
        h("label", {}, ["Level ", this.levelSelect]),
        this.logNote,
      ]),
      this.logEmpty,
      this.logList,
    ]);
  }

  buildTimelinePane(pane) {
    this.timelineNote = h("div", { class: "fb-timeline-note", hidden: true });
    this.timelineEmpty = h("div", { class: "fb-empty", text: "No task runs yet.", hidden: true });
    this.timelineScroll = h("div", { class: "fb-timeline-scroll" });
    this.timelineScroll.addEventListener("click", (event) => {
      const bar = event.target instanceof Element ? event.target.closest(".fb-bar") : null;
      if (!bar) return;
      this.selected = bar.getAttribute("data-key");
      this.detailSig = null;
      this.showTab("graph");
      this.markSelection();
      this.renderDetail();
    });
    appendAll(pane, [this.timelineNote, this.timelineEmpty, this.timelineScroll]);
  }

  // --- header --------------------------------------------------------------------------------

  renderHeader() {
    const hd = this.header();
    this.root.setAttribute("data-state", hd.state || "");
    this.flowEl.textContent = hd.flow || "";
    this.runNameEl.textContent = hd.run_name || "";
    this.runNameEl.title = hd.run_id ? `flow run ${hd.run_id}` : "";

    const [fill, fg] = stateColours(hd.state, hd.state_type);
    this.stateEl.textContent = hd.state || "";
    this.stateEl.setAttribute("data-state", hd.state || "");
    this.stateEl.style.background = fill;
    this.stateEl.style.color = fg;

    this.renderElapsed();

    const tags = [];
    if (hd.background) tags.push(h("span", { class: "fb-tag", text: "background" }));
    if (hd.source === "store") tags.push(h("span", { class: "fb-tag", text: "from the store" }));
    this.tagsEl.replaceChildren(...tags);

    this.countsEl.replaceChildren(...orderedCounts(hd.counts).map(([name, n]) => {
      const [colour] = stateColours(name, null);
      return h("span", { class: "fb-count", "data-state": name }, [
        h("span", { class: "fb-dot", style: `background:${colour}`, "aria-hidden": "true" }),
        `${name} ${n}`,
      ]);
    }));

    const total = hd.total || 0;
    const done = hd.done || 0;
    this.progressText.textContent = `${done}/${total}`;
    this.renderProgress(hd.counts, total);

    this.renderDashboard(hd);
    this.renderCancel(hd);

    const message = hd.message || "";
    this.messageEl.textContent = message;
    this.messageEl.hidden = message === "";
  }

  // One segment per state, as wide as its share of the task runs: a failed or cancelled run
  // does not look like a complete one.
  renderProgress(counts, total) {
    const rank = (name) => {
      const i = PROGRESS_ORDER.indexOf(name);
      return i < 0 ? PROGRESS_ORDER.length : i;
    };
    const entries = Object.entries(counts || {})
      .filter(([, n]) => n > 0)
      .sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    const sum = entries.reduce((acc, [, n]) => acc + n, 0);
    const whole = Math.max(total, sum);
    const parts = this.progressTrack.children;
    let i = 0;
    for (const [name, n] of entries) {
      let part = parts[i];
      if (!part) {
        part = h("span", { class: "fb-progress-part" });
        this.progressTrack.append(part);
      }
      part.setAttribute("data-state", name);
      part.title = `${name} ${n}`;
      part.style.background = stateColours(name, null)[0];
      part.style.width = `${(100 * n) / whole}%`;
      i++;
    }
    while (parts.length > i) parts[parts.length - 1].remove();
  }

  renderElapsed() {
    const hd = this.header();
    if (typeof hd.start !== "number") {
      this.elapsedEl.textContent = "";
      return;
    }
    const end = typeof hd.end === "number" ? hd.end : this.now();
    this.elapsedEl.textContent = formatDuration(end - hd.start);
  }

  renderDashboard(hd) {
    // only web addresses become links
    const link = typeof hd.dashboard_link === "string" ? hd.dashboard_link : "";
    const shown = /^https?:\/\//i.test(link);
    if (shown) {
      this.dashboardEl.setAttribute("href", link);
      this.dashboardEl.title = link;
    } else {
      this.dashboardEl.removeAttribute("href");
      this.dashboardEl.removeAttribute("title");
    }
    this.dashboardEl.hidden = !shown;
  }

  renderCancel(hd) {
    if (!hd.cancellable) {
      this.cancelBtn.remove();
      return;
    }
    const cancelling = this.cancelClicked || Boolean(hd.cancel_requested);
    this.cancelBtn.disabled = cancelling;
    this.cancelBtn.textContent = cancelling ? "Cancelling..." : "Cancel";
    if (!this.cancelBtn.isConnected || this.cancelBtn.parentNode !== this.headerEl) {
      this.headerEl.append(this.cancelBtn);
    }
  }

  // --- graph ---------------------------------------------------------------------------------

  renderGraph() {
    const graph = this.model.get("graph") || {};
    const nodes = graph.nodes || [];
    this.nodes = new Map(nodes.map((n) => [n.key, n]));
    const shape = graphShape(graph);
    if (shape !== this.graphShapeKey) {
      this.buildGraph(graph);
      this.graphShapeKey = shape;
    } else {
      for (const n of nodes) {
        const view = this.nodeViews.get(n.key);
        if (view) this.paintNode(view, n);
      }
    }
    this.graphEmpty.hidden = nodes.length > 0;
    if (this.selected !== null && !this.nodes.has(this.selected)) this.selected = null;
    this.markSelection();
    this.renderDetail();
  }

  buildGraph(graph) {
    const width = Math.max(1, graph.width || 0);
    const height = Math.max(1, graph.height || 0);
    const nodes = graph.nodes || [];
    const edges = graph.edges || [];
    const arrow = `${this.uid}-arrow`;
    const svg = s("svg", {
      class: "fb-graph", xmlns: SVG_NS, width, height, viewBox: `0 0 ${width} ${height}`,
    }, [
      s("defs", {}, [
        s("marker", {
          id: arrow, viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 8, markerHeight: 8,
          markerUnits: "userSpaceOnUse", orient: "auto",
        }, [s("path", { class: "fb-arrow", d: "M0,0 L8,4 L0,8 z", fill: "#888" })]),
      ]),
    ]);
    const flowLayer = s("g", { class: "fb-layer-flows" });
    const edgeLayer = s("g", { class: "fb-layer-edges" });
    const nodeLayer = s("g", { class: "fb-layer-nodes" });
    svg.append(flowLayer, edgeLayer, nodeLayer);

    this.nodeViews = new Map();
    const flows = nodes.filter((n) => n.kind === "flow");
    const depth = new Map(flows.map((n) => [n.key, flowDepth(n, this.nodes)]));
    flows.sort((a, b) => depth.get(a.key) - depth.get(b.key));
    for (const n of flows) flowLayer.append(this.createNode(n));
    for (const n of nodes) if (n.kind !== "flow") nodeLayer.append(this.createNode(n));

    this.edgeViews = [];
    const direction = graphDirection(edges, this.nodes);
    for (const edge of edges) {
      const a = this.nodes.get(edge.from);
      const b = this.nodes.get(edge.to);
      if (!a || !b) continue;
      const path = s("path", {
        class: "fb-edge",
        "data-from": edge.from,
        "data-to": edge.to,
        "data-kind": edge.kind || "data",
        d: validRoute(edge.points) ? routedPath(edge.points) : edgePath(a, b, direction),
        fill: "none",
        stroke: "#888",
        "stroke-width": 1.4,
        "stroke-dasharray": edge.kind === "wait_for" ? "4 3" : null,
        "marker-end": `url(#${arrow})`,
      });
      edgeLayer.append(path);
      this.edgeViews.push(path);
    }
    this.graphScroll.replaceChildren(svg);
  }

  createNode(n) {
    const kind = n.kind || "task";
    const view = { kind, node: n };
    view.title = s("title");
    view.g = s("g", {
      class: "fb-node", "data-key": n.key, "data-kind": kind, tabindex: 0, role: "button",
    }, [view.title]);
    if (kind === "flow") {
      // A box enclosing the subflow's children, with its title in a band along the top.
      view.box = s("rect", {
        class: "fb-node-box", x: n.x, y: n.y, width: n.w, height: n.h, rx: 8,
        "fill-opacity": 0.07, "stroke-width": 1.2,
      });
      view.band = s("rect", {
        class: "fb-flow-band", x: n.x, y: n.y, width: n.w, height: Math.min(22, n.h), rx: 8,
        "fill-opacity": 0.18,
      });
      view.label = s("text", {
        class: "fb-node-label", x: n.x + 8, y: n.y + Math.min(22, n.h) / 2,
        "dominant-baseline": "central",
        text: truncate(n.label, Math.floor((n.w - 16) / 7)),
      });
      appendAll(view.g, [view.box, view.band, view.label]);
      this.paintNode(view, n);
      this.nodeViews.set(n.key, view);
      return view.g;
    }

    const folded = kind === "map" || kind === "group";
    const cx = n.x + n.w / 2;
    view.box = s("rect", {
      class: "fb-node-box", x: n.x, y: n.y, width: n.w, height: n.h, rx: 6,
      stroke: "rgba(0,0,0,0.18)",
    });
    view.label = s("text", {
      class: "fb-node-label", x: cx, y: n.y + (folded ? n.h * 0.36 : n.h / 2),
      "text-anchor": "middle", "dominant-baseline": "central",
      text: truncate(n.label, Math.floor((n.w - 12) / 6.8)),
    });
    appendAll(view.g, [view.box, view.label]);
    if (folded) {
      view.progress = s("text", {
        class: "fb-node-progress", x: cx, y: n.y + n.h * 0.68,
        "text-anchor": "middle", "dominant-baseline": "central",
      });
      // The state mix: one segment per state, over a light track at the node's bottom edge.
      const mixWidth = Math.max(0, n.w - 12);
      view.mix = { x: n.x + 6, y: n.y + n.h - 6, width: mixWidth };
      view.mixGroup = s("g", { class: "fb-node-mix", "aria-hidden": "true" });
      appendAll(view.g, [view.progress, view.mixGroup]);
    }
    this.paintNode(view, n);
    this.nodeViews.set(n.key, view);
    return view.g;
  }

  // Everything about a node that can change without moving it.
  paintNode(view, n) {
    view.node = n;
    const [fill, fg] = stateColours(n.state, n.state_type);
    view.g.setAttribute("data-state", n.state || "");
    const lines = [n.label, n.state || ""];
    const counts = orderedCounts(n.counts);
    if (view.kind !== "task") {
      lines.push(`${n.done || 0}/${n.total || 0} done`);
      if (counts.length) lines.push(counts.map(([name, k]) => `${name} ${k}`).join(", "));
    }
    view.title.textContent = lines.join("\n");

    if (view.kind === "flow") {
      paint(view.box, fill);
      view.g.style.setProperty("--fb-node-fill", fill); // its outline (run_view.css)
      paint(view.band, fill);
      return;
    }
    paint(view.box, fill);
    paint(view.label, fg);
    if (!view.progress) return;
    paint(view.progress, fg);
    view.progress.textContent = `${n.done || 0}/${n.total || 0}`;

    const { x, y, width } = view.mix;
    const sum = counts.reduce((acc, [, k]) => acc + k, 0);
    const segments = [s("rect", {
      class: "fb-node-mix-track", x, y, width, height: 3, rx: 1, fill: "rgba(255,255,255,0.85)",
    })];
    let offset = x;
    for (const [name, k] of counts) {
      const w = sum > 0 ? (width * k) / sum : 0;
      const part = s("rect", {
        class: "fb-node-mix-part", "data-state": name, x: offset, y, width: w, height: 3,
      });
      paint(part, stateColours(name, null)[0]);
      segments.push(part);
      offset += w;
    }
    view.mixGroup.replaceChildren(...segments);
  }

  select(key) {
    this.selected = key;
    this.detailSig = null;
    this.markSelection();
    this.renderDetail();
  }

  markSelection() {
    for (const [key, view] of this.nodeViews) {
      view.g.classList.toggle("fb-selected", key === this.selected);
    }
    for (const path of this.edgeViews) {
      const touches = this.selected !== null && (
        path.getAttribute("data-from") === this.selected ||
        path.getAttribute("data-to") === this.selected
      );
      path.classList.toggle("fb-edge-hl", touches);
    }
  }

  // The panel of the selected node, drawn again only when its data changed (a redraw would
  // drop the reader's text selection and scroll position).
  renderDetail() {
    const node = this.selected === null ? null : this.nodes.get(this.selected);
    if (!node) {
      this.detailEl.hidden = true;
      this.detailEl.replaceChildren();
      this.detailKey = null;
      this.detailSig = null;
      return;
    }
    const sig = JSON.stringify([
      node.label, node.kind, node.state, node.done, node.total, node.counts, node.detail,
    ]);
    if (sig === this.detailSig && node.key === this.detailKey) return;
    const scrollTop = node.key === this.detailKey ? this.detailEl.scrollTop : 0;
    this.detailSig = sig;
    this.detailKey = node.key;

    const detail = node.detail || {};
    const runs = detail.runs || [];
    const runsTotal = detail.runs_total ?? runs.length;
    const close = h("button", {
      class: "fb-detail-close", type: "button", title: "Close", "aria-label": "Close", text: "×",
    });
    close.addEventListener("click", () => this.select(null));

    const summary = [];
    if (node.kind === "map" || node.kind === "group") {
      summary.push(`${node.done || 0}/${node.total || 0} done`);
      for (const [name, k] of orderedCounts(node.counts)) summary.push(`${name} ${k}`);
    }
    if (runsTotal > runs.length) summary.push(`showing ${runs.length} of ${runsTotal} runs`);

    this.detailEl.replaceChildren(
      h("div", { class: "fb-detail-head" }, [
        h("span", { class: "fb-detail-title", text: node.label }),
        h("span", { class: "fb-detail-kind", text: node.kind || "task" }),
        stateBadge(node.state, node.state_type),
        close,
      ]),
      ...(summary.length
        ? [h("div", { class: "fb-detail-summary", text: summary.join(" · ") })]
        : []),
      ...runs.map((run) => this.detailRun(run)),
    );
    this.detailEl.hidden = false;
    this.detailEl.scrollTop = scrollTop;
  }

  detailRun(run) {
    const states = run.states || [];
    const first = states.length ? states[0][1] : null;
    const items = states.map(([name, ts, message]) => h("li", {}, [
      h("span", { class: "fb-detail-time", text: clock(ts) }),
      h("span", { class: "fb-detail-offset", text: `+${formatDuration(ts - first)}` }),
      stateBadge(name, null),
      message ? h("span", { class: "fb-detail-state-msg", text: message }) : null,
    ]));

    let duration = formatDuration(run.duration);
    if (!duration && typeof run.start === "number" && (run.end === null || run.end === undefined)) {
      duration = `${formatDuration(this.now() - run.start)} (running)`;
    }
    const used = Math.max(0, (run.run_count || 0) - 1);
    // a stored run knows the retries used (its run count), not the task's retries option
    const retries = run.retries === null || run.retries === undefined
      ? String(used) : `${used} of ${run.retries}`;
    const field = (name, label, value, code = false) => {
      const missing = value === null || value === undefined || value === "";
      return h("div", { class: "fb-detail-field", "data-field": name }, [
        h("span", { class: "fb-detail-key", text: label }),
        h(code ? "code" : "span", { class: "fb-detail-value", text: missing ? "—" : value }),
      ]);
    };

    return h("div", { class: "fb-detail-run", "data-run-id": run.id || "" }, [
      h("div", { class: "fb-detail-run-head" }, [
        h("span", { class: "fb-detail-run-name", text: run.name || "" }),
        stateBadge(run.state, run.state_type),
        run.message ? h("span", { class: "fb-detail-message", text: run.message }) : null,
      ]),
      h("ul", { class: "fb-detail-states" }, items),
      h("div", { class: "fb-detail-fields" }, [
        field("duration", "duration", duration),
        field("retries", "retries used", retries),
        field("cache_key", "cache key", run.cache_key, true),
        field("cache", "cache", run.cache),
        field("inputs", "inputs", run.inputs, true),
        field("result", "result", run.result, true),
      ]),
      run.traceback ? h("pre", { class: "fb-detail-traceback", text: run.traceback }) : null,
    ]);
  }

  // --- logs ----------------------------------------------------------------------------------

  logRow(line, cls = "fb-log-row") {
    const [ts, level, who, message, task] = line;
    return h("div", { class: cls, "data-level": level || "", "data-task": task || "" }, [
      h("span", { class: "fb-log-time", text: clock(ts) }),
      h("span", { class: "fb-log-level", text: level || "" }),
      h("span", { class: "fb-log-who", text: who || "", title: who || "" }),
      h("span", { class: "fb-log-msg", text: message ?? "" }),
    ]);
  }

  renderTail() {
    const logs = this.model.get("logs") || [];
    const lines = logs.slice(-TAIL_LINES).map((line) => this.logRow(line, "fb-tail-line"));
    if (!lines.length) lines.push(h("div", { class: "fb-empty", text: "No log lines yet." }));
    this.tailEl.replaceChildren(...lines);
  }

  setTaskOptions() {
    const current = this.taskSelect.value || "";
    const names = [...this.taskNames];
    if (current && !this.taskNames.has(current)) names.push(current);
    names.sort();
    this.taskSelect.replaceChildren(
      h("option", { value: "", text: "all tasks" }),
      ...names.map((name) => h("option", { value: name, text: name })),
    );
    this.taskSelect.value = current;
  }

  // Appends the new lines and drops those that left the window when the list only moved on;
  // draws the whole list otherwise (first time, new filters, or a different list).
  renderLogs() {
    const logs = this.model.get("logs") || [];
    const total = Math.max(this.model.get("logs_total") || 0, logs.length);
    const first = total - logs.length; // the sequence number of logs[0] in the whole run
    const task = this.taskSelect.value;
    const minRank = levelRank(this.levelSelect.value);
    const keep = (line) => (task === "" || line[4] === task) && levelRank(line[1]) >= minRank;
    const list = this.logList;
    const cursor = this.logCursor;

    let fresh = [];
    let seqStart;
    let namesChanged = false;
    const incremental = cursor !== null && cursor.seq >= first && cursor.seq < total &&
      sameLogLine(logs[cursor.seq - first], cursor.line);
    if (incremental) {
      let removedHeight = 0;
      while (list.firstChild && list.firstChild.fbSeq < first) {
        if (!this.followLogs) removedHeight += list.firstChild.offsetHeight;
        list.firstChild.remove();
      }
      if (removedHeight) list.scrollTop = Math.max(0, list.scrollTop - removedHeight);
      seqStart = cursor.seq + 1;
      fresh = logs.slice(cursor.seq + 1 - first);
    } else {
      list.replaceChildren();
      this.taskNames = new Set();
      namesChanged = true;
      seqStart = first;
      fresh = logs;
    }

    const rows = document.createDocumentFragment();
    fresh.forEach((line, i) => {
      if (line[4] && !this.taskNames.has(line[4])) {
        this.taskNames.add(line[4]);
        namesChanged = true;
      }
      if (!keep(line)) return;
      const row = this.logRow(line);
      row.fbSeq = seqStart + i;
      rows.append(row);
    });
    list.append(rows);
    if (namesChanged) this.setTaskOptions();
    this.logCursor = logs.length ? { seq: total - 1, line: logs[logs.length - 1] } : null;

    this.logEmpty.hidden = list.childElementCount > 0;
    this.logEmpty.textContent = logs.length ? "No lines match the filters." : "No log lines yet.";
    const retired = this.header().retired || "";
    if (retired) this.logEmpty.textContent = retired;
    this.logNote.textContent = retired ? "" : total > logs.length
      ? `showing the last ${logs.length} of ${total} lines` : "";
    if (this.followLogs) list.scrollTop = list.scrollHeight;
  }

  // --- timeline ------------------------------------------------------------------------------

  // Bars in lanes, one labelled group of lanes per task (the kernel packs them, see
  // build_timeline in model.py); each bar names its task run inside when the name fits, else
  // beside it when there is room before the next bar, else a shortened name inside; the full
  // name is on hover.
  renderTimeline() {
    const tl = this.timeline();
    const bars = tl.bars || [];
    const total = tl.total ?? bars.length;
    const retired = this.header().retired || "";
    this.timelineNote.hidden = !(total > bars.length) || retired !== "";
    this.timelineNote.textContent = `showing the first ${bars.length} of ${total} task runs ` +
      `to start; ${total - bars.length} later ones are omitted`;
    this.timelineEmpty.hidden = bars.length > 0;
    this.timelineEmpty.textContent = retired || "No task runs yet.";

    const now = this.now();
    let lanes = Math.max(1, tl.lanes || 0);
    let start = typeof tl.start === "number" ? tl.start : Infinity;
    let end = typeof tl.end === "number" ? tl.end : now;
    for (const [lane, t0, t1] of bars) {
      lanes = Math.max(lanes, lane + 1);
      start = Math.min(start, t0);
      end = Math.max(end, t1 ?? now);
    }
    if (!Number.isFinite(start)) start = end;
    const span = Math.max(end - start, 1e-3);

    // Groups: a header row each, then its lanes. Without groups (an older snapshot), one
    // unlabelled group holds every lane.
    let groups = Array.isArray(tl.groups) ? tl.groups : [];
    if (!groups.length) groups = [{ task: "", lane: 0, lanes }];
    const laneHeight = 18, barHeight = 14, headHeight = groups.length > 1 || groups[0].task
      ? 18 : 0;
    const top = 24;
    const laneY = new Map(); // lane -> its top
    let y = top;
    const groupLayer = s("g", { class: "fb-lane-groups" });
    for (const group of groups) {
      if (headHeight) {
        const runs = group.runs === undefined ? "" : ` (${group.runs})`;
        groupLayer.append(
          s("line", { class: "fb-lane-group-rule", x1: 0, x2: "100%", y1: y + 0.5, y2: y + 0.5 }),
          s("text", {
            class: "fb-lane-group-label", "data-task": group.task, x: 4, y: y + headHeight / 2 + 1,
            "dominant-baseline": "central", text: `${group.task}${runs}`,
          }),
        );
      }
      y += headHeight;
      for (let i = 0; i < (group.lanes || 0); i++) {
        laneY.set(group.lane + i, y);
        y += laneHeight;
      }
    }
    for (let lane = 0; lane < lanes; lane++) {
      if (!laneY.has(lane)) {
        laneY.set(lane, y);
        y += laneHeight;
      }
    }

    this.timelineWidth = this.timelineScroll.clientWidth;
    const width = Math.max(360, (this.timelineWidth || 720) - 2);
    const left = 8, right = 24;
    const plot = width - left - right;
    const height = y + 6;
    const xOf = (t) => left + ((t - start) / span) * plot;

    const axis = s("g", { class: "fb-axis" });
    const step = tickStep(span, Math.max(2, Math.floor(plot / 90)));
    for (let t = 0; t <= span + 1e-9; t += step) {
      const x = xOf(start + t);
      axis.append(
        s("line", {
          class: "fb-grid", x1: x, x2: x, y1: top - 4, y2: height,
          stroke: "#888", "stroke-opacity": 0.25,
        }),
        s("text", {
          class: "fb-tick", x, y: top - 8, "text-anchor": t === 0 ? "start" : "middle",
          text: formatTick(t),
        }),
      );
    }

    // where the next bar of each lane starts, for the room beside a bar
    const placed = bars.map(([lane, t0, t1, ...rest]) => {
      const x0 = xOf(t0);
      // a pixel of gap before the next bar of the lane, so back-to-back runs stay apart
      const x1 = xOf(t1 ?? now);
      return [lane, x0, Math.max(x0 + 1.5, x1 - (x1 - x0 > 4 ? 1 : 0)), t0, t1, ...rest];
    });
    const nextStart = new Array(placed.length).fill(left + plot + right);
    const lastInLane = new Map();
    placed.map((bar, i) => i).sort((i, j) => placed[i][1] - placed[j][1]).forEach((i) => {
      const lane = placed[i][0];
      if (lastInLane.has(lane)) nextStart[lastInLane.get(lane)] = placed[i][1];
      lastInLane.set(lane, i);
    });

    const charWidth = 5.6; // 10px text
    const barLayer = s("g", { class: "fb-bars" });
    const labelLayer = s("g", { class: "fb-bar-labels" });
    placed.forEach(([lane, x0, x1, t0, t1, state, stateType, key, name], i) => {
      const running = t1 === null || t1 === undefined;
      const took = formatDuration((t1 ?? now) - t0);
      const tip = `${name} · ${state} · ${running ? `running for ${took}` : took}`;
      const [fill, fg] = stateColours(state, stateType);
      const barY = laneY.get(lane) + (laneHeight - barHeight) / 2;
      const rect = s("rect", {
        class: running ? "fb-bar fb-bar-running" : "fb-bar",
        "data-state": state || "",
        "data-key": key || "",
        "data-name": name || "",
        x: x0, y: barY, width: x1 - x0, height: barHeight, rx: 2,
      }, [s("title", { text: tip })]);
      paint(rect, fill);
      barLayer.append(rect);

      const text = String(name ?? "");
      if (!text) return;
      const inside = x1 - x0 - 6;
      const beside = nextStart[i] - x1 - 8;
      let label = null;
      let where = "inside";
      if (text.length * charWidth <= inside) label = text;
      else if (text.length * charWidth <= beside) { label = text; where = "beside"; }
      else if (inside >= 4 * charWidth) label = truncate(text, Math.floor(inside / charWidth));
      if (label === null) return;
      const t = s("text", {
        class: `fb-bar-label fb-bar-label-${where}`, "data-key": key || "",
        x: where === "inside" ? x0 + 3 : x1 + 4, y: barY + barHeight / 2 + 0.5,
        "dominant-baseline": "central", text: label,
      });
      if (where === "inside") paint(t, fg);
      labelLayer.append(t);
    });

    const svg = s("svg", {
      class: "fb-timeline", xmlns: SVG_NS, width, height, viewBox: `0 0 ${width} ${height}`,
    }, [groupLayer, axis, barLayer, labelLayer]);
    this.timelineScroll.replaceChildren(svg);
  }
}

export default {
  render({ model, el }) {
    const view = new RunView(model, el);
    return () => view.destroy();
  },
};
