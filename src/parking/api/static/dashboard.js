// 城市停车驾驶舱: the city's figures from /v1/city/*, kept live by /v1/city/stream.
// The token stays in this tab (sessionStorage), is sent as a header, never in a URL.
"use strict";

const TOKEN_KEY = "changbo.city.token";
const lots = new Map();
let chart = null;
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

function drawMap() {
  const points = [...lots.values()].map((l) => ({
    name: l.name, value: [l.longitude, l.latitude, l.occupancy_pct, l.occupied, l.capacity, l.lot_id],
  }));
  chart.setOption({
    tooltip: { formatter: (p) => p.name + "<br>" + p.value[3] + " / " + p.value[4] + "（" + p.value[2] + "%）" },
    grid: { left: 40, right: 20, top: 10, bottom: 30 },
    xAxis: { type: "value", scale: true, name: "经度", axisLabel: { color: "#9fb3c8" }, splitLine: { show: false } },
    yAxis: { type: "value", scale: true, name: "纬度", axisLabel: { color: "#9fb3c8" }, splitLine: { show: false } },
    visualMap: { min: 0, max: 100, dimension: 2, calculable: true, orient: "horizontal", left: "center", bottom: 0,
                 text: ["满", "空"], textStyle: { color: "#9fb3c8" }, inRange: { color: ["#2ecc71", "#f1c40f", "#e74c3c"] } },
    series: [{ type: "scatter", symbolSize: 7, data: points }],
  });
}

function applyLots(items) {
  for (const l of items) { lots.set(l.lot_id, l); }
  document.body.dataset.lots = String(lots.size);
  drawMap();
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
  window.addEventListener("resize", () => chart.resize());
  showOverview(await api("/v1/city/overview"));
  showDistricts((await api("/v1/city/districts")).items);
  applyLots((await api("/v1/city/lots")).items);
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
