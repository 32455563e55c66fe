// 畅泊虔城 · the page a scanned code opens. No framework, nothing from outside.
// The access token lives in this script's memory only; the refresh token is an
// HttpOnly cookie the script never sees (POST /q/auth/*). Every error is shown as
// a sentence, never as raw JSON.
"use strict";

const CODE = decodeURIComponent(location.pathname.split("/")[2] || "");
// What the provider's page sent back (?paid=1, ?contactless=on): read once, then
// taken out of the address so a reload or a shared link carries nothing.
const RETURNED = new URLSearchParams(location.search);
if (location.search) { history.replaceState(null, "", location.pathname); }
const PAGE = { "X-Changbo-Page": "1" };
const state = { access: null, about: null, timer: null, owed: [] };
const $ = (id) => document.getElementById(id);

const SENTENCES = {
  "qr-expired": "这个二维码已过期，请扫描现场张贴的最新二维码。",
  "qr-forged": "这不是有效的畅泊二维码。",
  "qr-malformed": "这不是有效的畅泊二维码。",
  "qr-unknown-key": "这个二维码已停用，请扫描现场张贴的最新二维码。",
  "invalid-phone": "请输入正确的11位手机号。",
  "invalid-code": "验证码不正确或已过期，请重新获取。",
  "invalid-plate": "车牌号格式不正确，例如：赣B12345。",
  "plate-held": "这个车牌已被其他账户绑定，如有疑问请联系管理员。",
  "plate-already-yours": "这个车牌已经在您的账户里了。",
  "too-many-vehicles": "每个账户最多绑定5辆车。",
  "account-suspended": "您的账户已被暂停使用，请联系管理员。",
  "already-paid": "这笔费用已经支付过了。",
  "payment-in-progress": "这笔费用正在支付中，请稍候刷新。",
  "provider-unavailable": "支付渠道暂时不可用，请稍后再试。",
  "provider-rejected": "支付未成功，请稍后再试或更换支付方式。",
  "service-unavailable": "服务暂时不可用，请稍后再试。",
  "occupancy-core-loading": "系统正在恢复，请稍后再试。",
  "lot-full": "停车场车位已满，请稍候或前往附近停车场。",
  "photo-too-large": "照片太大了，请选择小于8MB的照片。",
  "not-an-image": "这不是照片，请选择JPEG、PNG或WebP格式的图片。",
  "too-many-photos": "每次反映最多附3张照片。",
};
const BY_STATUS = {
  400: "输入有误，请检查后重试。",
  401: "请重新登录。",
  403: "没有权限进行这个操作。",
  404: "没有找到相关信息。",
  409: "状态已变化，请刷新页面后重试。",
  413: "提交的内容太长。",
  422: "无法处理这个请求。",
  429: "操作太频繁，请稍后再试。",
  502: "支付渠道出错，请稍后再试。",
  503: "服务暂时不可用，请稍后再试。",
};

class PageError extends Error {
  constructor(sentence, status) { super(sentence); this.status = status; }
}

async function call(path, { method = "GET", body, auth = true, headers = {} } = {}, retried = false) {
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) { h["Content-Type"] = "application/json"; }
  if (auth && state.access) { h.Authorization = "Bearer " + state.access; }
  let response;
  try {
    response = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  } catch (e) {
    throw new PageError("网络连接失败，请检查网络后重试。", 0);
  }
  if (response.status === 401 && auth && state.access && !retried && await refresh()) {
    return call(path, { method, body, auth, headers }, true);
  }
  if (response.status === 204) { return null; }
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) {
    const slug = payload && typeof payload.type === "string" ? payload.type.split("/").pop() : "";
    throw new PageError(SENTENCES[slug] || BY_STATUS[response.status] || "出了点问题，请稍后再试。", response.status);
  }
  return payload;
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text; box.hidden = !text; box.classList.toggle("ok", ok);
}

const yuan = (fen) => (fen / 100).toFixed(2) + " 元";
const time = (at) => new Date(at).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });

function li(left, right, cls) {
  const item = document.createElement("li");
  const a = document.createElement("span"); a.textContent = left; item.appendChild(a);
  if (right !== undefined) { const b = document.createElement("span"); b.textContent = right; if (cls) { b.className = cls; } item.appendChild(b); }
  return item;
}

function placeText(a) {
  if (a.kind === "lane") { return (a.direction === "in" ? "入口 " : "出口 ") + a.lane_id; }
  if (a.kind === "space") { return "泊位 " + a.space_id; }
  return a.lot_kind === "on_street" ? "路内停车" : "停车场";
}

async function loadAbout() {
  const a = await call("/q/" + encodeURIComponent(CODE) + "/about", { auth: false });
  state.about = a;
  $("lot-name").textContent = a.lot_name;
  $("lot-where").textContent = (a.address || a.district) + " · 共 " + a.capacity + " 个车位";
  $("place").textContent = placeText(a);
  $("hours").textContent = "开放时间：" + a.opening_hours;
  const header = document.querySelector("header.lot");
  header.classList.toggle("full", a.full);
  $("free").textContent = a.free === null ? "—" : a.full ? "已满" : String(a.free);
  $("free-label").textContent = a.free === null ? "空余车位暂不可查" : a.full ? "车位已满，请稍候或前往附近停车场" : "空余车位";
  document.body.dataset.free = a.free === null ? "" : String(a.free);
  $("tariff-name").textContent = a.tariff_name || "";
  $("tariff").replaceChildren(...(a.tariff.length ? a.tariff : ["暂无收费标准，请以现场公示为准。"]).map((t) => { const i = document.createElement("li"); i.textContent = t; return i; }));
}

async function refresh() {
  try {
    const got = await call("/q/auth/refresh", { method: "POST", auth: false, headers: PAGE });
    state.access = got.access_token;
    return true;
  } catch (e) {
    state.access = null;
    return false;
  }
}

function showLoggedIn(on) {
  $("login").hidden = on; $("me").hidden = !on;
  document.body.dataset.loggedIn = on ? "yes" : "no";
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  if (on) { state.timer = setInterval(() => { for (const load of [loadSessions, loadAbout, loadHistory, loadBills]) { load().catch(() => {}); } }, 10000); }
}

async function loadPlates() {
  const [page, mandates] = await Promise.all([call("/v1/me/vehicles"), call("/v1/me/contactless")]);
  const on = new Set(mandates.items.filter((m) => m.state === "active").map((m) => m.plate));
  $("plate-list").replaceChildren(...page.items.map((v) => {
    const item = li(v.plate, v.trust === "verified" ? "已核验" : "待核验", "muted");
    item.dataset.plate = v.plate;
    item.dataset.contactless = on.has(v.plate) ? "on" : "off";
    const actions = document.createElement("span"); actions.className = "actions";
    if (on.has(v.plate)) {
      const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = "无感支付已开通";
      actions.append(badge, button("关闭", () => contactlessOff(v)));
    } else {
      actions.appendChild(button("开通无感支付", () => contactlessOn(v)));
    }
    item.appendChild(actions);
    return item;
  }));
  $("space-plate").replaceChildren(...page.items.map((v) => { const o = document.createElement("option"); o.value = v.plate; o.textContent = v.plate; return o; }));
  return page.items;
}

async function loadSessions() {
  const got = await call("/v1/me/sessions/current");
  const here = got.items.filter((s) => !state.about || s.lot_id === state.about.lot_id);
  $("session-list").replaceChildren(...here.map((s) => {
    const fee = s.fee_fen === null ? "暂无法计费" : "当前费用 " + yuan(s.fee_fen);
    const item = li((s.plate || "无牌车") + " · " + time(s.entry_at) + " 入场", fee, "fee");
    item.dataset.session = s.session_id;
    if (s.fee_fen) {
      const actions = document.createElement("span"); actions.className = "actions";
      actions.appendChild(button("立即缴费离场", () => payNow(s.session_id)));
      item.appendChild(actions);
    }
    return item;
  }));
  $("no-session").hidden = here.length > 0;
  document.body.dataset.sessions = String(here.length);
}

async function loadBills() {
  const got = await call("/v1/me/bills");
  $("bill-list").replaceChildren(...got.items.map((b) => {
    const item = li(time(b.closed_at) + " · " + b.lot_id + (b.plate ? " · " + b.plate : "") + (b.status === "open" ? "" : " · " + (BILL_STATUS[b.status] || b.status)), yuan(b.amount_fen), "fee");
    item.dataset.bill = b.id;
    return item;
  }));
  $("owed").textContent = got.items.length ? "合计欠费 " + yuan(got.arrears_fen) : "没有欠费，谢谢！";
  state.owed = got.items.filter((b) => b.status === "open").map((b) => b.id);
  $("pay-bills").hidden = state.owed.length === 0;
}

// Paying hands the phone over to the provider's cashier (WeChat H5) and comes back
// here; what is being paid is remembered in this tab's sessionStorage (an id, never
// a token or anything personal) so the page can show the receipt when it returns.
const PAYING = "changbo-paying";

function idempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function handOver(billIds, sessionId) {
  const back = "/q/" + encodeURIComponent(CODE) + "?paid=1";
  const got = await call("/v1/bills/pay", { method: "POST", headers: { "Idempotency-Key": idempotencyKey() }, body: { bill_ids: billIds, provider: "wechat", channel: "h5", return_to: back } });
  if (!got.code_url) { throw new PageError("支付渠道暂时不可用，请稍后再试。", 502); }
  sessionStorage.setItem(PAYING, JSON.stringify({ payment: got.id, session: sessionId || null }));
  say("正在前往微信支付…", true);
  location.assign(got.code_url);
}

async function payNow(sessionId) {
  try {
    const p = await call("/v1/me/sessions/" + encodeURIComponent(sessionId) + "/prepay", { method: "POST" });
    if (!p.due_bill_ids.length) { say(leaveText(p), true); return; }
    await handOver(p.due_bill_ids, sessionId);
  } catch (e) { say(e.message); }
}

function leaveText(p) {
  return p.leave_by ? "已缴费 " + yuan(p.paid_fen) + "，请在 " + time(p.leave_by) + " 前离场，出口将自动抬杆。" : "这次停车暂不需要缴费。";
}

// 无感支付 on: the provider's sign-in, then its authorising page, then back here with
// ?contactless=on|declined|failed (the platform stores the mandate in between).
// A binding is named by its id in a URL: a plate never goes in one.
async function contactlessOn(vehicle) {
  try {
    const got = await call("/v1/me/contactless/" + encodeURIComponent(vehicle.id) + "/authorisation", { method: "POST", body: { provider: "wechat", return_to: "/q/" + encodeURIComponent(CODE) } });
    say("正在前往微信开通无感支付…", true);
    location.assign(got.url);
  } catch (e) { say(e.message); }
}

async function contactlessOff(vehicle) {
  try {
    await call("/v1/me/contactless/" + encodeURIComponent(vehicle.id), { method: "DELETE" });
    say(vehicle.plate + " 的无感支付已关闭，离场后请扫码缴费。", true);
    await loadPlates();
  } catch (e) { say(e.message); }
}

const CONTACTLESS = {
  on: ["无感支付已开通：离场时自动从微信支付扣费，无需扫码。", true],
  declined: ["未开通无感支付：您没有在微信中确认授权。", false],
  failed: ["暂时无法开通无感支付，请稍后再试。", false],
};

async function payBills() {
  try { await handOver(state.owed, null); } catch (e) { say(e.message); }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function returnedFromPaying() {
  const raw = sessionStorage.getItem(PAYING);
  sessionStorage.removeItem(PAYING);
  if (!raw) { return; }
  const { payment, session } = JSON.parse(raw);
  say("正在确认支付结果…", true);
  let view = null;
  for (let i = 0; i < 20; i += 1) {
    view = await call("/v1/payments/" + encodeURIComponent(payment));
    if (view.status !== "pending") { break; }
    await sleep(1000);
  }
  await Promise.all([loadSessions(), loadBills(), loadHistory()]);
  if (view.status === "paid") {
    if (session) {
      const p = await call("/v1/me/sessions/" + encodeURIComponent(session) + "/prepay", { method: "POST" }).catch(() => null);
      say(p ? leaveText(p) : "支付成功，谢谢！", true);
    } else {
      say("支付成功，已缴清 " + view.bill_ids.length + " 笔费用，谢谢！", true);
    }
    await showReceipt(view.bill_ids[0]);
    $("receipt").scrollIntoView({ block: "center" });
    document.body.dataset.paid = payment;
  } else if (view.status === "pending") {
    say("支付结果确认中。如已付款，请稍后刷新页面查看。");
  } else {
    say("支付未完成，费用仍待缴纳，可以再次支付。");
  }
}

const BILL_STATUS = { open: "待缴", paying: "支付中", paid: "已缴", refunded: "已退款", written_off: "已核销", disputed: "申诉中" };

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "small"; b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

async function loadHistory() {
  const got = await call("/v1/me/sessions?limit=10");
  const closed = got.items.filter((s) => s.status === "closed");
  $("history-list").replaceChildren(...closed.map((s) => {
    const status = s.bill_status ? BILL_STATUS[s.bill_status] || s.bill_status : (s.fee_fen ? "" : "免费");
    const item = li((s.plate || "无牌车") + " · " + time(s.exit_at) + " 离场 · " + (s.fee_fen === null ? "待核实" : yuan(s.fee_fen)) + (status ? " · " + status : ""));
    item.dataset.bill = s.bill_id || "";
    const actions = document.createElement("span"); actions.className = "actions";
    if (s.bill_id && (s.bill_status === "paid" || s.bill_status === "refunded")) { actions.appendChild(button("票据", () => showReceipt(s.bill_id))); }
    if (s.bill_id && s.bill_status !== "disputed" && s.bill_status !== "written_off") { actions.appendChild(button("申诉", () => startDispute(s.bill_id))); }
    item.appendChild(actions);
    return item;
  }));
  $("no-history").hidden = closed.length > 0;
}

async function showReceipt(billId) {
  try {
    const r = await call("/v1/me/receipts/" + encodeURIComponent(billId));
    const rows = [["停车场", r.lot_name || r.lot_id], ["车牌", r.plate || "无牌车"], ["日期", r.day],
      ["入场", r.entry_at ? time(r.entry_at) : "—"], ["离场", r.exit_at ? time(r.exit_at) : "—"],
      ["金额", yuan(r.amount_fen)], ["已退款", yuan(r.refunded_fen)], ["支付方式", r.provider === "alipay" ? "支付宝" : "微信支付"], ["票据号", r.bill_id]];
    $("receipt-body").replaceChildren(...rows.flatMap(([k, v]) => { const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; return [dt, dd]; }));
    $("receipt").hidden = false;
  } catch (e) { say(e.message); }
}

let disputing = null;
function startDispute(billId) {
  disputing = billId;
  $("dispute-title").textContent = "对这笔费用提出申诉";
  $("dispute-form").hidden = false;
  $("dispute-reason").focus();
}

function setUpAction() {
  const a = state.about;
  const box = $("action");
  if (!a || a.kind === "lot") { box.hidden = true; return; }
  box.hidden = false;
  $("space-form").hidden = a.kind !== "space";
  if (a.kind === "lane" && a.direction === "in") {
    $("action-title").textContent = "无牌车扫码入场";
    $("action-text").textContent = "车牌未被识别时，点击下方按钮开闸入场，离场时扫描出口二维码。";
    $("action-button").textContent = "开闸入场";
  } else if (a.kind === "lane") {
    $("action-title").textContent = "无牌车扫码出场";
    $("action-text").textContent = "点击下方按钮结算并开闸，费用计入您的账户，可先离场后缴费。";
    $("action-button").textContent = "结算出场";
  } else {
    $("action-title").textContent = "认领泊位 " + a.space_id;
    $("action-text").textContent = "选择您停在这个泊位的车辆，从车辆到达时开始计费。";
    $("action-button").textContent = "认领泊位";
  }
}

async function act() {
  const a = state.about;
  try {
    if (a.kind === "lane" && a.direction === "in") {
      await call("/v1/scans/entry", { method: "POST", body: { code: CODE } });
      say("道闸已开启，欢迎光临。", true);
    } else if (a.kind === "lane") {
      const got = await call("/v1/scans/exit", { method: "POST", body: { code: CODE } });
      say("道闸已开启，本次停车费 " + yuan(got.fee_fen || 0) + "，可稍后在“我的欠费”中缴纳。一路顺风！", true);
    } else {
      await call("/v1/scans/space", { method: "POST", body: { code: CODE, plate: $("space-plate").value } });
      say("已认领泊位 " + a.space_id + "。", true);
    }
    await Promise.all([loadSessions(), loadBills(), loadAbout(), loadHistory()]);
  } catch (e) { say(e.message); }
}

async function enter() {
  showLoggedIn(true);
  setUpAction();
  await Promise.all([loadPlates(), loadSessions(), loadBills(), loadHistory(), loadReports()]);
  const back = CONTACTLESS[RETURNED.get("contactless")];
  if (back) { say(...back); }
  await returnedFromPaying();
}

$("receipt-close").addEventListener("click", () => { $("receipt").hidden = true; });
$("dispute-cancel").addEventListener("click", () => { $("dispute-form").hidden = true; disputing = null; });
$("dispute-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await call("/v1/bills/" + encodeURIComponent(disputing) + "/dispute", { method: "POST", body: { reason: $("dispute-reason").value.trim() } });
    $("dispute-form").hidden = true; $("dispute-reason").value = ""; disputing = null;
    say("申诉已提交，我们会尽快处理并通知您。", true);
    await Promise.all([loadHistory(), loadBills()]);
  } catch (e) { say(e.message); }
});

const CASE_STATE = { received: "已受理", dispatched: "已派单", accepted: "已签收", in_progress: "处理中", resolved: "已处理，待您确认", closed: "已办结", reopened: "已退回重办" };

async function loadReports() {
  const got = await call("/v1/reports");
  $("report-list").replaceChildren(...got.items.slice(0, 5).map((r) => {
    const item = li(time(r.received_at) + " · " + ($("report-category").querySelector("option[value='" + r.category + "']") || { textContent: r.category }).textContent, CASE_STATE[r.state] || r.state, "muted");
    item.dataset.report = r.id;
    return item;
  }));
}

const PLATE_CATEGORIES = ["illegal_parking", "space_blocked"];
function showPlateField() {
  const about = PLATE_CATEGORIES.includes($("report-category").value);
  $("report-plate-label").hidden = !about;
  if (!about) { $("report-plate").value = ""; }
}
$("report-category").addEventListener("change", showPlateField);
showPlateField();

async function uploadPhoto(caseId, file) {
  const headers = { Accept: "application/json", "Content-Type": file.type || "application/octet-stream" };
  if (state.access) { headers.Authorization = "Bearer " + state.access; }
  const response = await fetch("/v1/reports/" + encodeURIComponent(caseId) + "/photos", { method: "POST", headers, body: file, credentials: "same-origin" });
  if (response.ok) { return null; }
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  const slug = payload && typeof payload.type === "string" ? payload.type.split("/").pop() : "";
  return SENTENCES[slug] || BY_STATUS[response.status] || "照片未能上传。";
}

$("report-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const photos = Array.from($("report-photos").files || []);
  if (photos.length > 3) { say(SENTENCES["too-many-photos"]); return; }
  try {
    const body = { code: CODE, category: $("report-category").value, text: $("report-text").value.trim() };
    const plate = $("report-plate").value.trim();
    if (plate && PLATE_CATEGORIES.includes(body.category)) { body.plate = plate; }
    const got = await call("/v1/reports", { method: "POST", body });
    $("report-text").value = ""; $("report-plate").value = "";
    const refused = [];
    for (const file of photos) {
      const why = await uploadPhoto(got.id, file);
      if (why) { refused.push(file.name + "：" + why); }
    }
    $("report-photos").value = "";
    const received = got.merged ? "已收到，这个问题已有人反映，我们正在处理。" : "已收到您的反映，工作人员会在30分钟内响应。";
    say(refused.length ? received + " 但有照片未能上传：" + refused.join("；") : received, refused.length === 0);
    await loadReports();
    document.body.dataset.photos = String(photos.length - refused.length);
    document.body.dataset.reported = got.id;
  } catch (e) { say(e.message); }
});

$("otp-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await call("/v1/auth/otp", { method: "POST", auth: false, body: { phone: $("phone").value.trim() } });
    $("login-form").hidden = false;
    say("验证码已发送，请查收短信。", true);
    $("code").focus();
  } catch (e) { say(e.message); }
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const got = await call("/q/auth/login", { method: "POST", auth: false, headers: PAGE, body: { phone: $("phone").value.trim(), code: $("code").value.trim() } });
    state.access = got.access_token;
    say("");
    await enter();
  } catch (e) { say(e.message); }
});

$("plate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await call("/v1/me/vehicles", { method: "POST", body: { plate: $("plate").value.trim() } });
    $("plate").value = "";
    say("车辆已添加。", true);
    await loadPlates();
  } catch (e) { say(e.message); }
});

$("action-button").addEventListener("click", act);
$("pay-bills").addEventListener("click", payBills);

$("logout").addEventListener("click", async () => {
  try { await call("/q/auth/logout", { method: "POST", headers: PAGE }); } catch (e) { /* logged out here anyway */ }
  state.access = null;
  showLoggedIn(false);
  say("已退出登录。", true);
});

(async () => {
  try { await loadAbout(); } catch (e) { say(e.message); return; }
  if (await refresh()) { await enter().catch((e) => say(e.message)); } else {
    showLoggedIn(false);
    if (sessionStorage.getItem(PAYING)) { sessionStorage.removeItem(PAYING); say("请重新登录后查看支付结果。"); }
  }
})();
