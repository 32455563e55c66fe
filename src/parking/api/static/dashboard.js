// 城市停车驾驶舱: the city's figures from /v1/city/*, kept live by /v1/city/stream.
// The token stays in this tab (sessionStorage), is sent as a header, never in a URL.
"use strict";

const TOKEN_KEY = "changbo.city.token";
const lots = new Map();
let chart = null;
let hourly = null;
let casesDaily = null;
const FIGURES_EVERY_MS = 30000;
let streamAbort = null;

const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n).toLocaleString("zh-CN");

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401 || response.status === 403) {
    throw new Error(response.status === 401 ? "令牌无效或已过期" : "此令牌不是城市管理角色");
  }
  if (!response.ok) { throw new Error("服务暂不可用（" + response.status + "）"); }
  return response.json();
}

function showOverview(o) {
  $("tile-lots").textContent = fmt(o.lots);
  $("tile-capacity").textContent = fmt(o.capacity);
  $("tile-occupied").textContent = fmt(o.occupied);
  $("tile-free").textContent = fmt(o.free);
  $("tile-occupancy").textContent = o.occupancy_pct.toFixed(1) + "%";
  $("tile-full").textContent = fmt(o.full_lots);
  $("tile-sessions").textContent = fmt(o.open_sessions);
  $("updated").textContent = "更新于 " + new Date(o.at).toLocaleTimeString("zh-CN");
}

function showDistricts(items) {
  for (const d of items) { districtNames.set(d.code, d.name); }
  const body = $("districts").querySelector("tbody");
  body.replaceChildren(...items.map((d) => {
    const row = document.createElement("tr");
    row.dataset.district = d.code;
    for (const value of [d.name, fmt(d.lots), fmt(d.capacity), fmt(d.occupied), fmt(d.free),
                         d.occupancy_pct.toFixed(1) + "%", fmt(d.full_lots)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    return row;
  }));
}

// No district boundary data with a licence that allows it ships with the platform
// (the npm package that has Ganzhou's outlines carries AMap's data, whose terms
// transfer no rights), so the map draws the districts the lots imply: each
// district's region is the part of the map nearer its lots' centre than any other
// district's (a Voronoi cell, cut to the city's extent), named at its centre.
let districtNames = new Map();

function clip(polygon, a, b, c) {
  // keep the part of the polygon where a*x + b*y <= c (Sutherland-Hodgman, one edge)
  const out = [];
  for (let i = 0; i < polygon.length; i++) {
    const p = polygon[i], q = polygon[(i + 1) % polygon.length];
    const fp = a * p[0] + b * p[1] - c, fq = a * q[0] + b * q[1] - c;
    if (fp <= 0) { out.push(p); }
    if ((fp < 0 && fq > 0) || (fp > 0 && fq < 0)) {
      const t = fp / (fp - fq);
      out.push([p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]);
    }
  }
  return out;
}

function districtOutlines() {
  const byDistrict = new Map();
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const l of lots.values()) {
    if (!byDistrict.has(l.district_code)) { byDistrict.set(l.district_code, []); }
    byDistrict.get(l.district_code).push([l.longitude, l.latitude]);
    minX = Math.min(minX, l.longitude); maxX = Math.max(maxX, l.longitude);
    minY = Math.min(minY, l.latitude); maxY = Math.max(maxY, l.latitude);
  }
  const pad = 0.08;
  const box = [[minX - pad, minY - pad], [maxX + pad, minY - pad], [maxX + pad, maxY + pad], [minX - pad, maxY + pad]];
  const centres = [...byDistrict].map(([code, points]) => [code,
    points.reduce((s, q) => s + q[0], 0) / points.length, points.reduce((s, q) => s + q[1], 0) / points.length]);
  const outlines = [], labels = [];
  for (const [code, x, y] of centres) {
    let cell = box;
    for (const [other, ox, oy] of centres) {
      if (other === code || cell.length === 0) { continue; }
      // nearer (x, y) than (ox, oy): 2(ox-x)X + 2(oy-y)Y <= ox^2+oy^2-x^2-y^2
      cell = clip(cell, 2 * (ox - x), 2 * (oy - y), ox * ox + oy * oy - x * x - y * y);
    }
    if (cell.length >= 3) { outlines.push({ coords: cell.concat([cell[0]]) }); }
    labels.push({ name: districtNames.get(code) || code, value: [x, y] });
  }
  document.body.dataset.outlines = String(outlines.length);
  return { outlines, labels };
}

function drawMap() {
  const points = [...lots.values()].map((l) => ({
    name: l.name, value: [l.longitude, l.latitude, l.occupancy_pct, l.occupied, l.capacity, l.lot_id],
  }));
  const { outlines, labels } = districtOutlines();
  chart.setOption({
    tooltip: { formatter: (p) => p.name + "<br>" + p.value[3] + " / " + p.value[4] + "（" + p.value[2] + "%）" },
    grid: { left: 40, right: 20, top: 10, bottom: 30 },
    xAxis: { type: "value", scale: true, name: "经度", axisLabel: { color: "#9fb3c8" }, splitLine: { show: false } },
    yAxis: { type: "value", scale: true, name: "纬度", axisLabel: { color: "#9fb3c8" }, splitLine: { show: false } },
    visualMap: { seriesIndex: 2, min: 0, max: 100, dimension: 2, calculable: true, orient: "horizontal", left: "center", bottom: 0,
                 text: ["满", "空"], textStyle: { color: "#9fb3c8" }, inRange: { color: ["#2ecc71", "#f1c40f", "#e74c3c"] } },
    series: [
      { type: "lines", coordinateSystem: "cartesian2d", polyline: true, silent: true, z: 1,
        lineStyle: { color: "#4f7dab", width: 1, opacity: 0.7, type: "dashed" }, data: outlines },
      { type: "scatter", symbolSize: 0, silent: true, z: 3, data: labels,
        label: { show: true, formatter: (p) => p.name, color: "#c7d6e6", fontSize: 11 } },
      { type: "scatter", symbolSize: 7, z: 2, data: points },
    ],
  });
}

function applyLots(items) {
  for (const l of items) { lots.set(l.lot_id, l); }
  document.body.dataset.lots = String(lots.size);
  drawMap();
}

const yuan = (fen) => "¥" + (fen / 100).toLocaleString("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const pct = (ratio) => (ratio === null || ratio === undefined) ? "—" : (100 * ratio).toFixed(1) + "%";
const minutes = (s) => (s === null || s === undefined) ? "—" : Math.round(s / 60) + " 分钟";
const ms = (v) => (v === null || v === undefined) ? "—" : v.toFixed(1) + " ms";
const STATUS = { settled: "已结算", open: "有差错", not_run: "未对账" };

// The business day (Asia/Shanghai) of a moment, as YYYY-MM-DD.
function businessDay(at) { return new Date(at.getTime() + 8 * 3600 * 1000).toISOString().slice(0, 10); }

function showDay(d) {
  $("money-billed").textContent = yuan(d.billed_fen);
  $("money-collected").textContent = yuan(d.collected_fen);
  $("money-rate").textContent = pct(d.collection_rate);
  $("money-arrears").textContent = yuan(d.arrears_fen);
  $("money-recovered").textContent = yuan(d.arrears_recovered_fen);
  $("money-outstanding").textContent = yuan(d.arrears_outstanding_fen);
  $("money-contactless").textContent = pct(d.contactless_share);
  $("money-turnover").textContent = d.turnover === null ? "—" : d.turnover.toFixed(2) + " 次/位";
  $("money-stay").textContent = minutes(d.stay_avg_s) + " / " + minutes(d.stay_median_s);
  $("devices-latency").textContent = ms(d.lane_p50_ms) + " / " + ms(d.lane_p99_ms);
  $("fullest").replaceChildren(...d.fullest.slice(0, 5).map((l) => {
    const item = document.createElement("li");
    item.textContent = l.name + "　峰值 " + (l.peak_pct === null ? "—" : l.peak_pct.toFixed(1) + "%");
    return item;
  }));
}

function showReconciliation(d) {
  const body = $("reconciliation").querySelector("tbody");
  body.replaceChildren(...d.reconciliation.map((r) => {
    const row = document.createElement("tr");
    row.dataset.provider = r.provider;
    for (const value of [r.provider === "wechat" ? "微信支付" : r.provider === "alipay" ? "支付宝" : r.provider,
                         STATUS[r.status] || r.status, yuan(r.matched_fen), fmt(r.discrepancies), fmt(r.pending)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    return row;
  }));
}

function showDevices(h) {
  $("devices-rate").textContent = pct(h.online_rate);
  $("devices-online").textContent = fmt(h.online) + " / " + fmt(h.devices);
  const kind = (k) => h.by_kind[k] ? fmt(h.by_kind[k][0]) + " / " + fmt(h.by_kind[k][1]) : "—";
  $("devices-gate").textContent = kind("gate");
  $("devices-sensor").textContent = kind("sensor");
}

function showHourly(entries, exits) {
  const hours = entries.points.map((p) => new Date(p.at).toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit", timeZone: "Asia/Shanghai" }));
  hourly.setOption({
    tooltip: { trigger: "axis" },
    legend: { data: ["入场", "出场"], top: 0, right: 10, textStyle: { color: "#c7d6e6" } },
    color: ["#4fc3f7", "#ffb74d"],
    grid: { left: 40, right: 16, top: 30, bottom: 24 },
    xAxis: { type: "category", data: hours, axisLabel: { color: "#9fb3c8" } },
    yAxis: { type: "value", minInterval: 1, axisLabel: { color: "#9fb3c8" }, splitLine: { lineStyle: { color: "#23405f" } } },
    series: [
      { name: "入场", type: "line", smooth: true, data: entries.points.map((p) => p.value) },
      { name: "出场", type: "line", smooth: true, data: exits.points.map((p) => p.value) },
    ],
  });
  document.body.dataset.hours = String(hours.length);
}

async function refreshFigures() {
  // The hourly and daily figures come from the rollups (refreshed every 30 s).
  const now = new Date();
  const today = businessDay(now);
  const yesterday = businessDay(new Date(now.getTime() - 24 * 3600 * 1000));
  const from = today + "T00:00:00+08:00";
  const to = businessDay(new Date(now.getTime() + 24 * 3600 * 1000)) + "T00:00:00+08:00";
  const span = "&from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to) + "&step=hour";
  try {
    const [day, before, devices, entries, exits] = await Promise.all([
      api("/v1/city/days/" + today), api("/v1/city/days/" + yesterday), api("/v1/city/devices"),
      api("/v1/city/timeseries?metric=entries" + span), api("/v1/city/timeseries?metric=exits" + span),
    ]);
    showDay(day); showReconciliation(before); showDevices(devices); showHourly(entries, exits);
    document.body.dataset.figures = day.refreshed_at ? "ready" : "waiting";
  } catch (e) { /* shown again at the next refresh; the stream says when the platform is down */ }
}

// 码上反映 · 响应时间: how far the city is from answering every report within the
// target (30 minutes unless the rules say otherwise), over the last 7 business days.
const CASE_DAYS = 7;
const DAY_MS = 24 * 3600 * 1000;
const CATEGORIES = {
  space_blocked: "车位被占用", illegal_parking: "违规停车", gate_fault: "道闸故障",
  sensor_fault: "地磁/检测器故障", wrong_charge: "收费不对", payment_problem: "支付问题",
  facility_damage: "设施损坏", safety_hazard: "安全隐患", other: "其他",
};
const LEVELS = { small: "小事快处", middle: "中事协处", big: "大事统处" };
let casesShown = false;

// Minutes as a person says them: whole minutes, a tenth when there is one.
const round1 = (m) => Math.round(m * 10) / 10;
const inMinutes = (m) => (m === null || m === undefined) ? "—" : round1(m) + " 分钟";

// Today and the 6 business days before it: the YYYY-MM-DD keys and the [from, to) asked for.
function caseWindow(now) {
  const days = [];
  for (let back = CASE_DAYS - 1; back >= 0; back--) { days.push(businessDay(new Date(now.getTime() - back * DAY_MS))); }
  const to = businessDay(new Date(now.getTime() + DAY_MS)) + "T00:00:00+08:00";
  return { days, from: days[0] + "T00:00:00+08:00", to };
}

// The sentence the panel leads with: the p90 against the target, never NaN.
function verdict(f) {
  const o = f.overall, target = f.target_minutes;
  if (o.cases === 0) { return ["近 7 天尚无案件，暂无响应时间。", ""]; }
  if (o.p90_minutes === null) { return ["近 7 天 " + o.cases + " 件案件都还没有签收，暂无响应时间。", "late"]; }
  const p90 = round1(o.p90_minutes);
  if (o.p90_minutes > target) {
    const gap = Math.max(0.1, round1(o.p90_minutes - target));
    return ["p90 响应 " + p90 + " 分钟，比 " + target + " 分钟目标慢 " + gap + " 分钟", "late"];
  }
  return ["p90 响应 " + p90 + " 分钟，达到 " + target + " 分钟目标", "met"];
}

// Rows of cells into a table's body; one spanning row saying ``empty`` when there are none.
function fillTable(table, rows, empty) {
  const body = table.querySelector("tbody");
  if (!rows.length) {
    const row = document.createElement("tr"), cell = document.createElement("td");
    cell.colSpan = table.querySelectorAll("thead th").length;
    cell.className = "empty";
    cell.textContent = empty;
    row.appendChild(cell);
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...rows.map(([key, values]) => {
    const row = document.createElement("tr");
    row.dataset.key = key;
    for (const value of values) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    return row;
  }));
}

const groupCells = (name, g) => [name, fmt(g.cases), inMinutes(g.p50_minutes), inMinutes(g.p90_minutes), pct(g.within_target)];

function showCases(f, days) {
  const o = f.overall;
  const [sentence, tone] = verdict(f);
  $("cases-verdict").textContent = sentence;
  $("cases-verdict").className = "verdict" + (tone ? " " + tone : "");
  $("cases-share-label").textContent = f.target_minutes + " 分钟内签收";
  $("cases-share").textContent = pct(o.within_target);
  $("cases-p50").textContent = inMinutes(o.p50_minutes);
  $("cases-p90").textContent = inMinutes(o.p90_minutes);
  $("cases-count").textContent = fmt(o.cases) + " / " + fmt(o.accepted);
  $("cases-waiting").textContent = fmt(f.waiting);
  $("cases-waiting-now").textContent = fmt(f.waiting_now) + " / " + fmt(f.overdue_now);
  $("cases-breaches").textContent = fmt(f.breaches);
  const levels = new Map(f.by_level.map((g) => [g.key, g]));
  fillTable($("cases-levels"), Object.keys(LEVELS).filter((k) => levels.has(k))
    .map((k) => [k, groupCells(LEVELS[k], levels.get(k))]), "尚无案件");
  // the slowest district first: the one keeping the city from its target
  const slowest = [...f.by_district].sort((a, b) => (b.p90_minutes ?? -1) - (a.p90_minutes ?? -1) || a.key.localeCompare(b.key));
  fillTable($("cases-districts"), slowest.map((g) => [g.key, groupCells(districtNames.get(g.key) || g.key, g)]), "尚无案件");
  const categories = Object.entries(f.by_category).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  fillTable($("cases-categories"), categories.map(([k, n]) => [k, [CATEGORIES[k] || k, fmt(n)]]), "尚无案件");
  showCasesDaily(f, days);
  document.body.dataset.cases = o.cases ? "ready" : "empty";
}

function showCasesDaily(f, days) {
  const byDay = new Map(f.by_day.map((g) => [g.key, g]));
  const value = (day, field) => { const g = byDay.get(day); return g && g[field] !== null ? round1(g[field]) : null; };
  casesDaily.setOption({
    title: { show: f.overall.cases === 0, text: "尚无案件", left: "center", top: "middle", textStyle: { color: "#9fb3c8", fontSize: 14 } },
    tooltip: {
      trigger: "axis",
      formatter: (items) => {
        const g = byDay.get(days[items[0].dataIndex]);
        return days[items[0].dataIndex] + "<br>" + (g ? "案件 " + g.cases + "，已签收 " + g.accepted + "<br>p50 " + inMinutes(g.p50_minutes)
          + "，p90 " + inMinutes(g.p90_minutes) + "<br>达标率 " + pct(g.within_target) : "尚无案件");
      },
    },
    legend: { data: ["p50", "p90"], top: 0, right: 10, textStyle: { color: "#c7d6e6" } },
    color: ["#4fc3f7", "#ffb74d"],
    grid: { left: 40, right: 16, top: 30, bottom: 24 },
    xAxis: { type: "category", data: days.map((d) => d.slice(5)), axisLabel: { color: "#9fb3c8" } },
    yAxis: { type: "value", min: 0, max: (v) => Math.ceil(Math.max(Number.isFinite(v.max) ? v.max : 0, f.target_minutes) * 1.15), axisLabel: { color: "#9fb3c8", formatter: (v) => Math.round(v) }, splitLine: { lineStyle: { color: "#23405f" } } },
    series: [
      { name: "p50", type: "bar", data: days.map((d) => value(d, "p50_minutes")) },
      { name: "p90", type: "bar", data: days.map((d) => value(d, "p90_minutes")),
        markLine: { silent: true, symbol: "none", lineStyle: { color: "#e74c3c", type: "dashed" },
                    label: { formatter: "目标 " + f.target_minutes + " 分钟", color: "#ff9a9a", position: "insideEndTop" },
                    data: [{ yAxis: f.target_minutes }] } },
    ],
  }, { notMerge: true });
  document.body.dataset.casesDays = String(days.length);
}

async function refreshCases() {
  const { days, from, to } = caseWindow(new Date());
  try {
    const figures = await api("/v1/city/cases/response-times?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to));
    showCases(figures, days);
    casesShown = true;
  } catch (e) {
    // figures already shown stay until the next refresh; none yet: say why
    if (!casesShown) { $("cases-verdict").textContent = "响应时间暂不可用：" + e.message; }
  }
}

async function refreshDistricts() {
  try { showDistricts((await api("/v1/city/districts")).items); } catch (e) { /* the stream says when down */ }
}

async function stream() {
  streamAbort = new AbortController();
  const response = await fetch("/v1/city/stream", {
    headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
    signal: streamAbort.signal,
  });
  if (!response.ok) { throw new Error("实时数据不可用（" + response.status + "）"); }
  $("live").textContent = "实时"; $("live").classList.remove("down");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { break; }
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let event = "message"; const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) { event = line.slice(6).trim(); }
        else if (line.startsWith("data:")) { data.push(line.slice(5).trim()); }
      }
      if (!data.length) { continue; }
      const payload = JSON.parse(data.join("\n"));
      if (event === "snapshot" || event === "lots") { applyLots(payload); if (event === "lots") { refreshDistricts(); } }
      else if (event === "overview") { showOverview(payload); }
      else if (event === "unavailable") { throw new Error("实时数据暂不可用"); }
    }
  }
}

async function keepStreaming() {
  // A stream that ends normally (the server bounds each connection) reconnects at
  // once; one that fails waits a little first.
  for (;;) {
    try { await stream(); continue; } catch (e) {
      if (e.name === "AbortError") { return; }
      $("live").textContent = e.message + "，重连中…"; $("live").classList.add("down");
    }
    await new Promise((r) => setTimeout(r, 3000));
  }
}

async function open() {
  $("login").hidden = true; $("board").hidden = false;
  chart = echarts.init($("map"), null, { renderer: "canvas" });
  hourly = echarts.init($("hourly"), null, { renderer: "canvas" });
  casesDaily = echarts.init($("cases-daily"), null, { renderer: "canvas" });
  window.addEventListener("resize", () => { chart.resize(); hourly.resize(); casesDaily.resize(); });
  showOverview(await api("/v1/city/overview"));
  showDistricts((await api("/v1/city/districts")).items);
  applyLots((await api("/v1/city/lots")).items);
  await Promise.all([refreshFigures(), refreshCases()]);
  setInterval(() => { refreshFigures(); refreshCases(); }, FIGURES_EVERY_MS);
  keepStreaming();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  try { await open(); } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("board").hidden = true; $("login").hidden = false;
    $("login-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", () => {
  if (streamAbort) { streamAbort.abort(); }
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

if (token()) { open().catch((e) => { sessionStorage.removeItem(TOKEN_KEY); $("login-error").textContent = e.message; $("board").hidden = true; $("login").hidden = false; }); }
