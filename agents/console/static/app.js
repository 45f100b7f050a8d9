// The console page: everything it shows comes from the JSON API and the /api/events stream;
// it draws with DOM and SVG nodes (never innerHTML), so names from the wire stay text.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
/** Which phases allow which action: from the server (GET /api/destinations), so both agree. */
let allowed = {};
let current = { phase: "idle", rows: [], timelines: [], ladder: [] };
let busy = false;

// --- token: given once as #token=..., kept for the tab's life ---------------------------------
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) {
  sessionStorage.setItem("sip-teleport-token", hashToken);
  history.replaceState(null, "", location.pathname);
}
const token = sessionStorage.getItem("sip-teleport-token");

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok)
    throw Object.assign(new Error((data.error && data.error.reason) || res.statusText), { info: data.error });
  return data;
}

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) n.append(c instanceof Node ? c : String(c));
  return n;
}

function svg(tag, attrs, ...children) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== undefined && c !== null) n.append(c instanceof Node ? c : String(c));
  return n;
}

const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
const when = (ms) => new Date(ms).toLocaleString();

function errorBox(e, title) {
  return el(
    "div",
    { class: "error", id: "refusal" },
    el("strong", {}, `${title}: ${e.status} ${e.reason}`),
    e.details && e.details.length
      ? el(
          "ul",
          {},
          e.details.map((d) => el("li", {}, d)),
        )
      : null,
  );
}

// --- setup: inventory, destinations, defaults ---------------------------------------------------
async function loadInventory() {
  const { vms } = await api("GET", "/api/inventory");
  const body = $("inventory").tBodies[0];
  const ticked = new Set([...body.querySelectorAll("input:checked")].map((i) => i.value));
  body.replaceChildren(
    ...vms.map((v) =>
      el(
        "tr",
        { "data-vm": v.name },
        el(
          "td",
          {},
          el("input", Object.assign({ type: "checkbox", value: v.name }, ticked.has(v.name) ? { checked: "" } : {})),
        ),
        el("td", {}, v.name),
        el("td", {}, v.role),
        el("td", { class: "state" }, v.state),
        el("td", {}, `${v.memoryMib} MiB`),
        el("td", {}, v.cpus),
      ),
    ),
  );
}

async function loadDestinations() {
  const d = await api("GET", "/api/destinations");
  allowed = d.allowed;
  $("destinations").replaceChildren(...d.destinations.map((u) => el("option", { value: u })));
  if (!$("to").value && d.destinations.length) $("to").value = d.destinations[0];
  $("plan").append(...d.plans.map((p) => el("option", { value: p }, p)));
  for (const k of ["strategy", "maxParallel", "bandwidthMbps", "downtimeLimitMs", "onError"]) $(k).value = d.policy[k];
  for (const [k, r] of Object.entries(d.reductions)) {
    $(k).replaceChildren(...r.choices.map((c) => el("option", { value: c }, c)));
    $(k).value = r.default;
  }
}

// --- buttons ----------------------------------------------------------------------------------
function enableButtons() {
  for (const action of Object.keys(allowed)) $(action).disabled = busy || !allowed[action].includes(current.phase);
  // Cancel is useful exactly while a Call request is outstanding.
  $("cancel").disabled = !allowed.cancel.includes(current.phase);
}

async function act(action, body) {
  $("message").textContent = "";
  busy = action === "call" || action === "bye";
  enableButtons();
  try {
    await api("POST", `/api/${action}`, body);
  } catch (e) {
    // A refusal of the call is drawn from the state (it carries the destination's reasons); one by the
    // console itself (e.g. 403, a destination outside security.destinations) never reached the line: say why.
    const details = (x) => (x.details || []).join("; ");
    const fromLine = e.info && current.phase === "ended" && current.error && details(current.error) === details(e.info);
    const why = e.info ? ` ${e.info.status} ${e.info.reason}: ${details(e.info)}` : ` ${e.message}`;
    if (!fromLine) $("message").textContent = `${action}:${why}`;
  } finally {
    busy = false;
    enableButtons();
  }
}

function callRequest() {
  const to = $("to").value.trim();
  const plan = $("plan").value;
  const reductions = { compress: $("compress").value, dedup: $("dedup").value };
  if (plan) return { to, plan, ...reductions };
  const vms = [...$("inventory").querySelectorAll("tbody input:checked")].map((i) => i.value);
  const num = (id) => Number($(id).value);
  return {
    to,
    vms,
    policy: {
      strategy: $("strategy").value,
      maxParallel: num("maxParallel"),
      bandwidthMbps: num("bandwidthMbps"),
      downtimeLimitMs: num("downtimeLimitMs"),
      onError: $("onError").value,
    },
    ...reductions,
  };
}

// Ask first: the destination's verdict and the plan's estimates, whatever the line is doing.
$("dry-run").addEventListener("click", async () => {
  const out = $("dry-run-result");
  out.hidden = false;
  out.textContent = "asking the destination…";
  try {
    out.textContent = (await api("POST", "/api/dry-run", callRequest())).text;
  } catch (e) {
    const details = (e.info && e.info.details) || [];
    out.textContent = [`dry run: ${e.info ? `${e.info.status} ` : ""}${e.message}`, ...details].join("\n");
  }
});
// Empty the host for maintenance: every VM running here to the configured destinations.
$("evacuate").addEventListener("click", async () => {
  if (!confirm("Move every VM running on this host to the configured destinations?")) return;
  const out = $("evacuate-result");
  out.hidden = false;
  out.textContent = "evacuating… (asking the destinations, then moving)";
  $("evacuate").disabled = true;
  try {
    out.textContent = (await api("POST", "/api/evacuate", {})).text;
  } catch (e) {
    const details = (e.info && e.info.details) || [];
    out.textContent = [`evacuate: ${e.info ? e.info.status : ""} ${e.message}`, ...details].join("\n");
  } finally {
    $("evacuate").disabled = false;
    loadInventory().catch(() => undefined);
  }
});
$("call").addEventListener("click", () => act("call", callRequest()));
$("cancel").addEventListener("click", () => act("cancel", {}));
$("migrate").addEventListener("click", () => act("migrate", {}));
$("abort").addEventListener("click", () => act("abort", {}));
$("bye").addEventListener("click", () => act("bye", {}));

// --- the live view ------------------------------------------------------------------------------
function renderState(s) {
  current = s;
  $("line").textContent = s.phase;
  $("line").dataset.phase = s.phase;
  $("dialog").textContent = s.migrationId
    ? `${s.migrationId} → ${s.to}${s.by && s.by !== "console" ? ` (triggered by ${s.by})` : ""}`
    : s.to
      ? `→ ${s.to}`
      : "";
  enableButtons();
  renderDialog(s, true);
  if (s.phase === "ended" || s.phase === "finished") loadInventory().catch(() => undefined);
}

/** The answer/refusal, progress bars, report and timelines of a dialog, live or from the history. */
function renderDialog(d, live) {
  const answer = [];
  if (d.answer)
    answer.push(el("div", { class: "ok", id: "armed" }, `armed by the destination: ${d.answer.armed.join(", ")}`));
  if (d.error) answer.push(errorBox(d.error, d.error.status === 487 ? "cancelled" : "refused"));
  if (live && d.phase === "calling")
    answer.push(
      el("div", { class: "muted" }, "calling… (INVITE sent, waiting for the destination to arm its listeners)"),
    );
  $("answer").replaceChildren(...answer);
  $("progress").replaceChildren(...(d.rows || []).map(progressRow));
  $("report").replaceChildren(...(d.summary ? [reportTable(d.summary)] : []));
  $("timelines").replaceChildren(...(d.timelines || []).map(timelineChart));
  $("ladder").replaceChildren(
    d.ladder && d.ladder.length ? ladderChart(d.ladder, d.to) : el("p", { class: "muted" }, "no dialog yet"),
  );
}

function progressRow(r) {
  const pct = Math.round(r.progress * 100);
  // a VM with copied disks: a second bar for the disk mirror, which runs before the memory moves
  const disk = r.disk ? Math.round(r.disk.progress * 100) : undefined;
  return el(
    "div",
    { class: "vm", "data-vm": r.vm, "data-phase": r.phase },
    el("div", { class: "name" }, r.vm),
    el("div", { class: "bar" }, el("div", { style: `width:${pct}%` }), el("span", {}, `${pct}%`)),
    el(
      "div",
      { class: "detail" },
      el("span", { class: "phase" }, r.phase),
      ` ${mib(r.transferredBytes)}`,
      r.note ? el("div", {}, r.note) : null,
    ),
    r.disk ? el("div", { class: "name" }, "disks") : null,
    r.disk
      ? el("div", { class: "bar disk" }, el("div", { style: `width:${disk}%` }), el("span", {}, `${disk}%`))
      : null,
    r.disk ? el("div", { class: "detail" }, `${mib(r.disk.transferredBytes)} of ${mib(r.disk.totalBytes)}`) : null,
  );
}

function reportTable(s) {
  const row = (v) =>
    el(
      "tr",
      { "data-vm": v.vm },
      el("td", {}, v.vm),
      el("td", { class: `outcome-${v.state}` }, v.state),
      el("td", {}, v.totalMs !== undefined ? `${v.totalMs} ms` : "-"),
      el("td", {}, v.downtimeMs !== undefined ? `${v.downtimeMs} ms` : "-"),
      el("td", {}, v.transferredBytes !== undefined ? mib(v.transferredBytes) : "-"),
      el("td", {}, v.host),
    );
  const p = s.phases;
  const notes = s.vms.filter((v) => v.reason).map((v) => el("li", {}, `${v.vm}: ${v.reason}`));
  return el(
    "div",
    { id: "summary" },
    el("h2", {}, "Report ", el("span", { class: `outcome-${s.outcome}` }, s.outcome)),
    el(
      "table",
      {},
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["VM", "outcome", "total", "downtime", "transferred", "runs on"].map((h) => el("th", {}, h)),
        ),
      ),
      el("tbody", {}, s.vms.map(row)),
    ),
    notes.length ? el("ul", {}, notes) : null,
    el(
      "p",
      { class: "muted" },
      `SIP phases: INVITE→200 ${p.arming} ms` +
        (p.ackToFirstMigrate !== undefined ? `, 200→first migrate ${p.ackToFirstMigrate} ms` : "") +
        (p.lastCompletionToByeOk !== undefined ? `, last completion→BYE 200 ${p.lastCompletionToByeOk} ms` : "") +
        (s.destinationReport
          ? `; destination reports ${s.destinationReport.outcome}`
          : "; no report from the destination"),
    ),
  );
}

/** The dialog as a ladder: this host on the left, the destination on the right, time going down. */
function ladderChart(steps, to) {
  const W = 620,
    left = 150,
    right = 560,
    top = 34,
    rowH = 24;
  const H = top + steps.length * rowH + 10;
  const t0 = steps[0].at;
  const g = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "SIP ladder" },
    svg(
      "defs",
      {},
      ["r", "l"].map((k) =>
        svg(
          "marker",
          {
            id: `head-${k}`,
            viewBox: "0 0 10 10",
            refX: 9,
            refY: 5,
            markerWidth: 7,
            markerHeight: 7,
            orient: "auto-start-reverse",
          },
          svg("path", { d: "M0,0 L10,5 L0,10 z", fill: k === "r" ? "#2368c4" : "#1f9d55" }),
        ),
      ),
    ),
    svg("text", { x: left, y: 14, "text-anchor": "middle", class: "head" }, "this host (source)"),
    svg("text", { x: W - 4, y: 14, "text-anchor": "end", class: "head" }, to || "destination"),
    svg("line", { x1: left, y1: 20, x2: left, y2: H - 4, class: "lifeline" }),
    svg("line", { x1: right, y1: 20, x2: right, y2: H - 4, class: "lifeline" }),
  );
  steps.forEach((s, i) => {
    const y = top + i * rowH + 12;
    const [x1, x2] = s.rightward ? [left, right] : [right, left];
    g.append(
      svg("text", { x: 4, y: y + 4, class: "t" }, `${((s.at - t0) / 1000).toFixed(3)} s`),
      svg("line", {
        x1,
        y1: y,
        x2,
        y2: y,
        class: `arrow ${s.rightward ? "" : "left"}`,
        "marker-end": `url(#head-${s.rightward ? "r" : "l"})`,
      }),
      svg(
        "text",
        { x: (left + right) / 2, y: y - 4, "text-anchor": "middle" },
        s.label.length > 64 ? s.label.slice(0, 61) + "…" : s.label,
      ),
    );
  });
  return g;
}

/** One VM's migration over time: bytes sent (line), pre-copy and downtime (bars), done (marker). */
function timelineChart(t) {
  const W = 620,
    H = 150,
    x0 = 56,
    x1 = 600,
    yTop = 24,
    yBottom = 96;
  const end = t.endedAt || (t.samples.length ? t.samples[t.samples.length - 1].at : t.startedAt + 1);
  const span = Math.max(1, end - t.startedAt);
  const maxBytes = Math.max(1, ...t.samples.map((s) => s.bytes));
  const x = (at) => x0 + ((at - t.startedAt) / span) * (x1 - x0);
  const y = (b) => yBottom - (b / maxBytes) * (yBottom - yTop);
  const points = [[t.startedAt, 0], ...t.samples.map((s) => [s.at, s.bytes])]
    .map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`)
    .join(" ");
  const down = t.downtimeMs || 0;
  const switchAt = end - down;
  const g = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `timeline of ${t.vm}`, "data-vm": t.vm },
    svg(
      "text",
      { x: 4, y: 14, class: "head" },
      `${t.vm}: ${t.state || "running"}` +
        (t.totalMs !== undefined ? `, total ${t.totalMs} ms, downtime ${down} ms` : ""),
    ),
    svg("line", { x1: x0, y1: yBottom, x2: x1, y2: yBottom, stroke: "#9aa6b2" }),
    svg("line", { x1: x0, y1: yTop, x2: x0, y2: yBottom, stroke: "#9aa6b2" }),
    svg("text", { x: x0 - 4, y: yTop + 4, "text-anchor": "end", class: "t" }, mib(maxBytes).replace(" MiB", "")),
    svg("text", { x: x0 - 4, y: yBottom, "text-anchor": "end", class: "t" }, "MiB 0"),
    svg("polyline", { points, fill: "none", stroke: "#2368c4", "stroke-width": 2 }),
    svg("rect", { x: x0, y: yBottom + 8, width: Math.max(1, x(switchAt) - x0), height: 14, fill: "#8fb4e3" }),
    svg("rect", {
      x: x(switchAt),
      y: yBottom + 8,
      width: Math.max(2, x(end) - x(switchAt)),
      height: 14,
      fill: "#c9372c",
      class: "downtime",
    }),
    svg("text", { x: x0 + 4, y: yBottom + 19 }, "pre-copy"),
    svg(
      "text",
      { x: Math.min(x(switchAt), x1 - 70) - 4, y: yBottom + 36, "text-anchor": "end", class: "t" },
      `downtime ${down} ms`,
    ),
    svg("line", {
      x1: x(end),
      y1: yTop,
      x2: x(end),
      y2: yBottom + 24,
      stroke: t.state === "completed" ? "#1f9d55" : "#c9372c",
      "stroke-width": 2,
    }),
    svg(
      "text",
      { x: x(end), y: yBottom + 50, "text-anchor": "end", class: "t" },
      `${t.state === "completed" ? "done" : t.state || ""} at ${span} ms`,
    ),
    svg("text", { x: x0, y: yBottom + 50, class: "t" }, "0 ms"),
  );
  return g;
}

// --- history ------------------------------------------------------------------------------------
async function loadHistory() {
  const { dialogs } = await api("GET", "/api/history");
  $("history").replaceChildren(
    ...dialogs.map((d) =>
      el(
        "li",
        { "data-id": d.id, onclick: () => showHistory(d.id) },
        `${when(d.startedAt)} → ${d.to} `,
        el("span", { class: `outcome-${d.outcome}` }, d.outcome),
        d.migrationId ? ` ${d.migrationId}` : "",
        d.by !== "console" ? ` (by ${d.by})` : "",
      ),
    ),
  );
}

async function showHistory(id) {
  const r = await api("GET", `/api/history/${id}`);
  $("dialog").textContent = `${r.migrationId || ""} → ${r.to} (from the history, ${when(r.startedAt)})`;
  const rows = r.summary
    ? r.summary.vms.map((v) => ({
        vm: v.vm,
        phase: v.state,
        progress: v.state === "completed" ? 1 : 0,
        transferredBytes: v.transferredBytes || 0,
        note: v.reason,
      }))
    : [];
  renderDialog({ to: r.to, summary: r.summary, error: r.error, ladder: r.ladder, timelines: r.timelines, rows }, false);
}

// --- live stream --------------------------------------------------------------------------------
function connect() {
  const es = new EventSource(`/api/events${token ? `?access_token=${encodeURIComponent(token)}` : ""}`);
  es.addEventListener("open", () => ($("connection").textContent = "live"));
  es.addEventListener("error", () => ($("connection").textContent = "reconnecting…"));
  es.addEventListener("state", (e) => renderState(JSON.parse(e.data)));
  es.addEventListener("history", () => loadHistory().catch(() => undefined));
}

Promise.all([loadDestinations(), loadInventory(), loadHistory()])
  .then(connect)
  .catch((e) => ($("message").textContent = `cannot reach the console API: ${e.message}`));
