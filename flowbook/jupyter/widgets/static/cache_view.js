// flowbook's cache explorer, front end (an anywidget ESM module; the traits, messages and DOM
// are described in flowbook/jupyter/widgets/cache_view.py).
//
// The kernel reads the store; this module draws the `entries` grouped by flow and task, the
// `misses` with their reasons, and the `status` line. Selection lives here (a set of
// "task key \0 key" strings), survives redraws, and forgets entries that are gone. The filter
// is a case-insensitive substring match on flow, task, key and input preview, and is synced
// with the kernel through the `filter` trait.

const ROWS_PER_TASK = 200; // more than this per task: narrow with the filter

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function when(iso) {
  return iso ? String(iso).replace("T", " ").slice(0, 19) : "";
}

function size(n) {
  let value = Number(n) || 0;
  for (const unit of ["B", "KB", "MB", "GB"]) {
    if (value < 1024) return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} TB`;
}

function selectionKey(entry) {
  return `${entry.task_key}\u0000${entry.key}`;
}

function matches(needle, ...fields) {
  if (!needle) return true;
  return fields.some((f) => f && String(f).toLowerCase().includes(needle));
}

// entries -> [[flow name, [[task key, task name, [entry, ...]], ...]], ...], in first-seen
// order (entries arrive newest first, so the most recently used flows and tasks come first)
function group(entries) {
  const flows = new Map();
  for (const entry of entries) {
    const flow = entry.flow_name || "";
    if (!flows.has(flow)) flows.set(flow, new Map());
    const tasks = flows.get(flow);
    if (!tasks.has(entry.task_key)) tasks.set(entry.task_key, [entry.task_name, []]);
    tasks.get(entry.task_key)[1].push(entry);
  }
  return [...flows].map(([flow, tasks]) => [
    flow,
    [...tasks].map(([taskKey, [name, list]]) => [taskKey, name, list]),
  ]);
}

function render({ model, el }) {
  const selected = new Set();
  const root = h("div", "fb-cache");

  const bar = h("div", "fb-cache-bar");
  const filter = h("input", "fb-cache-filter");
  filter.type = "search";
  filter.placeholder = "Filter by flow, task, key or inputs";
  filter.setAttribute("aria-label", "Filter cache entries");
  const invalidate = h("button", "fb-cache-invalidate", "Invalidate selected");
  invalidate.type = "button";
  const refresh = h("button", "fb-cache-refresh", "Refresh");
  refresh.type = "button";
  bar.append(filter, invalidate, refresh);

  const status = h("div", "fb-cache-status");
  const table = h("table", "fb-cache-table");
  const head = h("thead");
  const headRow = h("tr");
  const selectAll = h("input", "fb-cache-select-all");
  selectAll.type = "checkbox";
  selectAll.title = "Select all shown entries";
  const selectCell = h("th", "fb-cache-check");
  selectCell.append(selectAll);
  headRow.append(selectCell);
  for (const [title, className] of [
    ["Key", "fb-cache-key"],
    ["Created", "fb-cache-created"],
    ["Expires", "fb-cache-expires"],
    ["Size", "fb-cache-size"],
    ["Hits", "fb-cache-hits"],
    ["Inputs", "fb-cache-inputs"],
  ]) {
    headRow.append(h("th", className, title));
  }
  head.append(headRow);
  table.append(head);

  const empty = h("div", "fb-cache-empty", "No cache entries.");
  const missesBox = h("div", "fb-cache-misses");
  root.append(bar, status, table, empty, missesBox);
  el.append(root);

  let shown = []; // entries currently visible (for select-all)

  function syncButtons() {
    invalidate.disabled = selected.size === 0;
    invalidate.textContent =
      selected.size === 0 ? "Invalidate selected" : `Invalidate selected (${selected.size})`;
    const visible = shown.filter((e) => selected.has(selectionKey(e))).length;
    selectAll.checked = shown.length > 0 && visible === shown.length;
    selectAll.indeterminate = visible > 0 && visible < shown.length;
  }

  function entryRow(entry) {
    const row = h("tr", "fb-cache-row");
    row.dataset.task = entry.task_name;
    row.dataset.taskKey = entry.task_key;
    row.dataset.key = entry.key;
    if (entry.expired) row.classList.add("fb-cache-expired");
    const box = h("input", "fb-cache-select");
    box.type = "checkbox";
    box.checked = selected.has(selectionKey(entry));
    box.setAttribute("aria-label", `Select entry ${entry.key.slice(0, 16)} of ${entry.task_name}`);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(selectionKey(entry));
      else selected.delete(selectionKey(entry));
      syncButtons();
    });
    const check = h("td", "fb-cache-check");
    check.append(box);
    const key = h("td", "fb-cache-key", entry.key.slice(0, 16));
    key.title = entry.key;
    const created = h("td", "fb-cache-created", when(entry.created));
    created.title = entry.created || "";
    const expires = h(
      "td",
      "fb-cache-expires",
      entry.expired ? "expired" : when(entry.expires) || "never",
    );
    expires.title = entry.expires || "no expiration";
    const inputs = h("td", "fb-cache-inputs", entry.input_preview || "");
    inputs.title = entry.input_preview || "";
    row.append(
      check,
      key,
      created,
      expires,
      h("td", "fb-cache-size", size(entry.size)),
      h("td", "fb-cache-hits", entry.hits),
      inputs,
    );
    return row;
  }

  function drawEntries() {
    const needle = (model.get("filter") || "").trim().toLowerCase();
    const entries = model.get("entries") || [];
    const present = new Set(entries.map(selectionKey));
    for (const k of [...selected]) if (!present.has(k)) selected.delete(k);
    for (const body of table.querySelectorAll("tbody")) body.remove();
    shown = [];
    const visible = entries.filter((e) =>
      matches(needle, e.flow_name, e.task_name, e.key, e.input_preview, e.task_key),
    );
    for (const [flow, tasks] of group(visible)) {
      const body = h("tbody", "fb-cache-flow");
      body.dataset.flow = flow;
      const flowRow = h("tr", "fb-cache-flow-header");
      const flowCell = h("th", null, flow ? `Flow ${flow}` : "Outside any flow");
      flowCell.colSpan = 7;
      flowRow.append(flowCell);
      body.append(flowRow);
      for (const [taskKey, name, list] of tasks) {
        const taskRow = h("tr", "fb-cache-task");
        taskRow.dataset.task = name;
        taskRow.dataset.taskKey = taskKey;
        const taskCell = h("th", null);
        taskCell.colSpan = 7;
        taskCell.append(
          h("span", "fb-cache-task-name", name),
          h("span", "fb-cache-task-count", ` ${list.length} entr${list.length === 1 ? "y" : "ies"}`),
        );
        taskCell.title = taskKey;
        taskRow.append(taskCell);
        body.append(taskRow);
        for (const entry of list.slice(0, ROWS_PER_TASK)) {
          body.append(entryRow(entry));
          shown.push(entry);
        }
        if (list.length > ROWS_PER_TASK) {
          const more = h("tr", "fb-cache-more");
          const cell = h("td", null, `... and ${list.length - ROWS_PER_TASK} more: filter to narrow`);
          cell.colSpan = 7;
          more.append(cell);
          body.append(more);
        }
      }
      table.append(body);
    }
    table.hidden = shown.length === 0;
    empty.hidden = shown.length !== 0;
    empty.textContent = entries.length ? "No entry matches the filter." : "No cache entries.";
    syncButtons();
  }

  function drawMisses() {
    const needle = (model.get("filter") || "").trim().toLowerCase();
    const misses = (model.get("misses") || []).filter((m) =>
      matches(needle, m.flow_name, m.task_name, m.key, m.input_preview, m.task_key),
    );
    missesBox.replaceChildren();
    if (!misses.length) return;
    missesBox.append(h("div", "fb-cache-misses-title", "Why missed"));
    for (const miss of misses) {
      const item = h("div", "fb-cache-miss");
      item.dataset.task = miss.task_name;
      item.dataset.taskKey = miss.task_key;
      item.dataset.cause = miss.cause;
      const title = h("div", "fb-cache-miss-title");
      title.append(h("span", "fb-cache-task-name", miss.task_name));
      const where = [when(miss.missed_at)];
      if (miss.task_run) where.push(`task run ${miss.task_run}`);
      if (miss.flow_name) where.push(`flow ${miss.flow_name}`);
      title.append(h("span", "fb-cache-miss-when", ` ${where.join(" \u00b7 ")}`));
      item.append(title, h("div", "fb-cache-reason", miss.reason));
      if (miss.hits_since) {
        const n = miss.hits_since;
        item.append(
          h("div", "fb-cache-miss-since", `${n} later call${n === 1 ? "" : "s"} hit the cache.`),
        );
      }
      missesBox.append(item);
    }
  }

  function drawStatus() {
    status.textContent = model.get("status") || "";
  }

  function drawFilter() {
    const value = model.get("filter") || "";
    if (filter.value !== value) filter.value = value;
    drawEntries();
    drawMisses();
  }

  filter.addEventListener("input", () => {
    model.set("filter", filter.value);
    model.save_changes();
    drawEntries();
    drawMisses();
  });
  selectAll.addEventListener("change", () => {
    for (const entry of shown) {
      if (selectAll.checked) selected.add(selectionKey(entry));
      else selected.delete(selectionKey(entry));
    }
    for (const box of table.querySelectorAll("input.fb-cache-select")) {
      box.checked = selectAll.checked;
    }
    syncButtons();
  });
  invalidate.addEventListener("click", () => {
    if (!selected.size) return;
    // a task key never holds NUL (it is a path and a name); a custom cache key might
    const keys = [...selected].map((k) => {
      const cut = k.indexOf("\u0000");
      return [k.slice(0, cut), k.slice(cut + 1)];
    });
    model.send({ type: "invalidate", keys });
    status.textContent = `Invalidating ${keys.length} entr${keys.length === 1 ? "y" : "ies"}...`;
  });
  refresh.addEventListener("click", () => {
    model.send({ type: "refresh" });
    status.textContent = "Refreshing...";
  });

  const onEntries = () => drawEntries();
  const onMisses = () => drawMisses();
  model.on("change:entries", onEntries);
  model.on("change:misses", onMisses);
  model.on("change:status", drawStatus);
  model.on("change:filter", drawFilter);
  drawStatus();
  drawFilter();

  return () => {
    model.off("change:entries", onEntries);
    model.off("change:misses", onMisses);
    model.off("change:status", drawStatus);
    model.off("change:filter", drawFilter);
  };
}

export default { render };
