// The Lambent console: every call goes to this API (and uploads to the presigned URLs it gives).
// Tokens are kept in memory only; the one value in sessionStorage is a browser sign-in's PKCE
// verifier, for the minutes the browser is away at the provider.

const BASE = location.pathname.replace(/\/console\/?$/, "");
const CONSOLE_URL = `${location.origin}${BASE}/console`;
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELED"]);
const session = { access: null, refresh: null, me: null };
let config = { oauth_providers: [], browser_sign_in: false, upscale_models: [], default_upscale_model: "" };
let jobsTimer = null;

const $ = (selector) => document.querySelector(selector);

/** A problem+json answer (RFC 9457), or a failure to reach the API. */
class Problem extends Error {
  constructor(status, detail, body = {}) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

async function problemOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status line is all there is.
  }
  const detail = body.detail || body.title || body.message || `The API answered ${response.status}.`;
  return new Problem(response.status, detail, body);
}

/** Calls the API as the signed-in user; refreshes the access token once on a 401. */
async function api(method, path, body, { form = false, retry = true } = {}) {
  const headers = { accept: "application/json" };
  let payload;
  if (form) {
    headers["content-type"] = "application/x-www-form-urlencoded";
    payload = new URLSearchParams(body).toString();
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (session.access) headers.authorization = `Bearer ${session.access}`;
  let response;
  try {
    response = await fetch(`${BASE}${path}`, { method, headers, body: payload });
  } catch (error) {
    throw new Problem(0, `The API could not be reached (${error.message}).`);
  }
  if (response.status === 401 && retry && session.refresh && !path.startsWith("/v1/auth/")) {
    if (await refreshTokens()) return api(method, path, body, { form, retry: false });
  }
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  return response.json();
}

async function refreshTokens() {
  try {
    keep(await api("POST", "/v1/auth/refresh", { refresh_token: session.refresh }, { retry: false }));
    return true;
  } catch {
    signedOut("Your session ended; sign in again.");
    return false;
  }
}

function keep(tokens) {
  session.access = tokens.access_token;
  session.refresh = tokens.refresh_token;
}

// ---- messages ------------------------------------------------------------------------------

function showError(error) {
  const box = $("#alert");
  box.replaceChildren();
  const text = error instanceof Problem ? error.message : `Something went wrong: ${error.message}`;
  const strong = document.createElement("strong");
  strong.textContent = error instanceof Problem && error.status ? `${error.status} ` : "";
  box.append(strong, text);
  const fields = error instanceof Problem ? error.body.errors : null;
  if (Array.isArray(fields) && fields.length) {
    const list = document.createElement("ul");
    for (const field of fields) {
      const item = document.createElement("li");
      item.textContent = `${field.field || field.name || "input"}: ${field.message || field.detail || ""}`;
      list.append(item);
    }
    box.append(list);
  }
  if (error instanceof Problem && error.status === 402) {
    const link = document.createElement("a");
    link.href = "#account";
    link.textContent = "Claim your daily reward on the Account page";
    box.append(" ", link, ", or ask for credits.");
  }
  box.dataset.status = error instanceof Problem ? String(error.status) : "";
  box.hidden = false;
}

function clearError() {
  $("#alert").hidden = true;
  $("#alert").replaceChildren();
}

function notice(text) {
  $("#notice").textContent = text;
}

/** Runs an action from a form or a button: errors shown, the control busy meanwhile. */
function action(control, run) {
  return async (event) => {
    event?.preventDefault();
    clearError();
    const button = control.tagName === "FORM" ? control.querySelector("button[type=submit]") : control;
    if (button) button.disabled = true;
    try {
      await run(event);
    } catch (error) {
      showError(error);
    } finally {
      if (button) button.disabled = false;
    }
  };
}

// ---- small DOM helpers -----------------------------------------------------------------------

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  row.append(td);
  return td;
}

function facts(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value ?? "–";
    list.append(dt, dd);
  }
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function bytes(n) {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function button(label, onClick, name) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (name) b.setAttribute("aria-label", name);
  b.addEventListener("click", action(b, onClick));
  return b;
}

// ---- views -----------------------------------------------------------------------------------

const VIEWS = ["account", "upscale", "bestcut", "generate", "jobs", "webhooks", "admin"];

function show() {
  const signedIn = Boolean(session.access);
  let view = location.hash.slice(1);
  if (!signedIn) view = "signin";
  else if (!VIEWS.includes(view) || (view === "admin" && session.me?.role !== "admin")) view = "account";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `view-${view}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#${view}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#nav").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  clearInterval(jobsTimer);
  jobsTimer = null;
  const load = { account: loadAccount, jobs: loadJobs, webhooks: loadEndpoints, admin: loadAdmin }[view];
  if (load) load().catch(showError);
  if (view === "jobs") jobsTimer = setInterval(() => loadJobs().catch(showError), 1000);
}

async function signedIn(tokens) {
  keep(tokens);
  await refreshMe();
  if (!VIEWS.includes(location.hash.slice(1))) location.hash = "#account";
  show();
  notice(`Signed in as ${session.me.username}.`);
}

function signedOut(text) {
  session.access = null;
  session.refresh = null;
  session.me = null;
  show();
  notice(text);
}

async function refreshMe() {
  session.me = await api("GET", "/v1/auth/me");
  $("#who-name").textContent = session.me.username;
  $("#who-credits").textContent = session.me.credits;
  $("#nav-admin").hidden = session.me.role !== "admin";
}

async function refreshCredits() {
  const credits = await api("GET", "/v1/credits");
  $("#who-credits").textContent = credits.balance;
  return credits;
}

// ---- sign-in ---------------------------------------------------------------------------------

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

async function startBrowserSignIn(provider) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem("lambent.sign-in", JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({
    redirect_uri: CONSOLE_URL,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state,
  });
  location.assign(`${BASE}/v1/auth/oauth/${encodeURIComponent(provider)}/start?${query}`);
}

/** Back from a provider: the code redeemed with the verifier kept for it. */
async function finishBrowserSignIn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return;
  const kept = JSON.parse(sessionStorage.getItem("lambent.sign-in") || "null");
  sessionStorage.removeItem("lambent.sign-in");
  history.replaceState(null, "", `${BASE}/console`);
  if (query.has("error")) {
    throw new Problem(400, query.get("error_description") || `Sign-in failed: ${query.get("error")}.`);
  }
  if (!kept || kept.state !== query.get("state")) {
    throw new Problem(400, "This sign-in was not started here; start it again.");
  }
  const tokens = await api(
    "POST",
    "/v1/auth/token",
    { grant_type: "authorization_code", code: query.get("code"), code_verifier: kept.verifier, redirect_uri: CONSOLE_URL },
    { form: true, retry: false },
  );
  await signedIn(tokens);
}

// ---- account ---------------------------------------------------------------------------------

async function loadAccount() {
  await refreshMe();
  const me = session.me;
  facts($("#profile"), [
    ["Username", me.username],
    ["Email", me.email ? `${me.email}${me.email_verified ? " (verified)" : ""}` : null],
    ["Role", me.role],
    ["Membership", me.membership?.tier],
    ["Id", me.id],
    ["Member since", when(me.created_at)],
  ]);
  const [credits, ledger, daily] = await Promise.all([
    refreshCredits(),
    api("GET", "/v1/credits/transactions"),
    api("GET", "/v1/credits/daily"),
  ]);
  $("#balance").textContent = credits.balance;
  $("#active-jobs").textContent = `${credits.active_jobs} job(s) running now.`;
  $("#claim-daily").disabled = !daily.available;
  $("#daily").textContent = daily.available
    ? `${daily.credits} credits are waiting for you today.`
    : `Claimed; the next reward comes ${when(daily.next_at)}.`;
  const body = $("#ledger tbody");
  body.replaceChildren();
  let sum = 0;
  for (const t of ledger.items) {
    const row = document.createElement("tr");
    cell(row, when(t.created_at));
    cell(row, t.type);
    cell(row, t.amount > 0 ? `+${t.amount}` : String(t.amount)).className = "num";
    cell(row, t.note || t.reason || t.job_id || "");
    body.append(row);
    sum += t.amount;
  }
  $("#ledger").dataset.sum = String(sum);
}

// ---- uploads and photos ------------------------------------------------------------------------

async function upload(file) {
  const target = await api("POST", "/v1/uploads", { content_type: file.type, size: file.size });
  const headers = {};
  for (const [name, value] of Object.entries(target.headers || {})) {
    // The browser sets these itself.
    if (!["content-length", "host"].includes(name.toLowerCase())) headers[name] = value;
  }
  let response;
  try {
    response = await fetch(target.url, { method: target.method || "PUT", headers, body: file });
  } catch (error) {
    throw new Problem(0, `The upload could not be sent (${error.message}).`);
  }
  if (!response.ok) throw new Problem(response.status, `The storage refused the upload (${response.status}).`);
  return target.key;
}

/** Polls a photo (or a job) until it ends, moving a progress bar and a status line. */
async function follow(path, bar, status) {
  for (;;) {
    const item = await api("GET", path);
    bar.value = item.progress ?? 0;
    status.textContent = item.status.replace("_", " ").toLowerCase();
    if (TERMINAL.has(item.status)) {
      if (item.status === "FAILED") {
        throw new Problem(422, item.error?.message || item.error?.detail || "The job failed.", item.error || {});
      }
      if (item.status === "CANCELED") throw new Problem(409, "The job was canceled.");
      return item;
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

function onePhoto(input) {
  const file = input.files[0];
  if (!file) throw new Problem(422, "Choose a photo first.");
  return file;
}

async function upscale() {
  const file = onePhoto($("#upscale-file"));
  $("#upscale-result").hidden = true;
  $("#upscale-status").textContent = "uploading";
  const key = await upload(file);
  const submitted = await api("POST", "/v1/photos/upscale", { upload_key: key, model: $("#upscale-model").value });
  const photo = await follow(`/v1/photos/${submitted.id}`, $("#upscale-progress"), $("#upscale-status"));
  refreshCredits().catch(() => {});
  await showComparison(photo);
}

async function showComparison(photo) {
  const { original, upscaled } = photo;
  const after = $("#compare-after");
  const before = $("#compare-before");
  // Both drawn in the same box, the upscaled photo's shape: the original at the same scale.
  $("#compare").style.setProperty("--ratio", `${upscaled.width / upscaled.height}`);
  const loaded = (img) => new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Problem(0, "A photo could not be loaded from storage."));
  });
  const both = Promise.all([loaded(after), loaded(before)]);
  after.src = upscaled.url;
  before.src = original.url;
  $("#upscale-result").hidden = false;
  setComparison();
  const seconds = (new Date(photo.finished_at) - new Date(photo.created_at)) / 1000;
  facts($("#upscale-facts"), [
    ["Model", photo.model],
    ["Time taken", `${seconds.toFixed(1)} s`],
    ["Original", `${original.width} × ${original.height}, ${bytes(original.bytes)}`],
    ["Upscaled", `${upscaled.width} × ${upscaled.height}, ${bytes(upscaled.bytes)}`],
  ]);
  await both;
  $("#compare").dataset.ready = "true";
}

function setComparison() {
  const share = Number($("#compare-position").value);
  $("#compare-before").style.clipPath = `inset(0 ${100 - share}% 0 0)`;
  $("#compare").style.setProperty("--split", `${share}%`);
}

async function bestCut() {
  const files = [...$("#bestcut-files").files];
  if (files.length < 2 || files.length > 20) throw new Problem(422, "Choose 2 to 20 photos.");
  const list = $("#bestcut-result");
  list.replaceChildren();
  $("#bestcut-winner").hidden = true;
  $("#bestcut-status").textContent = "uploading";
  const keys = [];
  for (const file of files) keys.push(await upload(file));
  const names = new Map(keys.map((key, i) => [key, files[i].name]));
  const submitted = await api("POST", "/v1/photos/bestcut", { upload_keys: keys, upscale: $("#bestcut-upscale").checked });
  const photo = await follow(`/v1/photos/${submitted.id}`, $("#bestcut-progress"), $("#bestcut-status"));
  refreshCredits().catch(() => {});
  const scores = Array.isArray(photo.scores)
    ? photo.scores.map((s) => [s.key ?? s.upload_key, s.score ?? s.sharpness])
    : Object.entries(photo.scores || {});
  scores.sort((a, b) => b[1] - a[1]);
  for (const [key, score] of scores) {
    const item = document.createElement("li");
    const name = names.get(key) || key;
    item.textContent = `${name}: sharpness ${Number(score).toFixed(1)}${key === photo.winner ? " (the winner)" : ""}`;
    if (key === photo.winner) item.className = "winner";
    list.append(item);
  }
  const shown = photo.upscaled || photo.original;
  if (shown) {
    const name = names.get(photo.winner) || photo.winner;
    $("#bestcut-winner-image").alt = `The winner, ${name}`;
    $("#bestcut-winner-image").src = shown.url;
    $("#bestcut-winner-caption").textContent =
      `The winner, ${name}: ${shown.width} × ${shown.height}${photo.upscaled ? ", upscaled" : ""}`;
    $("#bestcut-winner").hidden = false;
  }
}

// ---- generation --------------------------------------------------------------------------------

async function generate() {
  const input = {
    provider: $("#generate-provider").value,
    model: $("#generate-model").value.trim(),
    task: $("#generate-task").value,
    prompt: $("#generate-prompt").value.trim(),
  };
  if (!input.prompt) throw new Problem(422, "Write a prompt first.");
  const gallery = $("#generate-result");
  gallery.replaceChildren();
  const submitted = await api("POST", "/v1/jobs", { kind: "generate", input });
  const job = await follow(`/v1/jobs/${submitted.id}`, $("#generate-progress"), $("#generate-status"));
  refreshCredits().catch(() => {});
  for (const file of job.output?.files || []) {
    let media;
    if (file.content_type.startsWith("image/")) {
      media = document.createElement("img");
      media.alt = input.prompt;
    } else {
      media = document.createElement(file.content_type.startsWith("video/") ? "video" : "audio");
      media.controls = true;
    }
    media.src = file.url;
    gallery.append(media);
  }
}

// ---- jobs --------------------------------------------------------------------------------------

async function loadJobs() {
  const page = await api("GET", "/v1/jobs?limit=25");
  const body = $("#jobs tbody");
  const rows = [];
  for (const job of page.items) {
    const row = document.createElement("tr");
    row.dataset.id = job.id;
    row.dataset.status = job.status;
    cell(row, job.kind);
    cell(row, job.status.replace("_", " ").toLowerCase()).className = `status ${job.status.toLowerCase()}`;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = job.progress ?? 0;
    bar.setAttribute("aria-label", `Progress of ${job.kind} ${job.id}`);
    cell(row, bar);
    cell(row, job.charged ?? job.cost ?? "").className = "num";
    cell(row, when(job.created_at));
    const actions = cell(row, "");
    if (!TERMINAL.has(job.status) && !job.cancel_requested) {
      actions.append(button("Cancel", async () => {
        await api("POST", `/v1/jobs/${job.id}/cancel`);
        notice(`Asked to cancel ${job.kind} ${job.id}.`);
        await loadJobs();
      }, `Cancel ${job.kind} ${job.id}`));
    }
    rows.push(row);
  }
  // Keep the focused control when nothing about its row changed.
  if (!body.contains(document.activeElement)) body.replaceChildren(...rows);
  else mergeRows(body, rows);
}

function mergeRows(body, rows) {
  const focused = document.activeElement.closest("tr");
  body.replaceChildren(...rows.map((row) => (focused && row.dataset.id === focused.dataset.id && row.dataset.status === focused.dataset.status ? focused : row)));
}

// ---- webhooks ----------------------------------------------------------------------------------

async function loadEndpoints() {
  const page = await api("GET", "/v1/webhook-endpoints");
  const body = $("#endpoints tbody");
  body.replaceChildren();
  for (const endpoint of page.items) {
    const row = document.createElement("tr");
    cell(row, endpoint.url);
    cell(row, endpoint.events.join(", "));
    cell(row, when(endpoint.created_at));
    const actions = cell(row, "");
    actions.append(
      button("Deliveries", () => loadDeliveries(endpoint), `Deliveries to ${endpoint.url}`),
      button("Delete", async () => {
        await api("DELETE", `/v1/webhook-endpoints/${endpoint.id}`);
        $("#deliveries-box").hidden = true;
        await loadEndpoints();
      }, `Delete ${endpoint.url}`),
    );
    body.append(row);
  }
}

async function addEndpoint() {
  const url = $("#webhook-url").value.trim();
  const endpoint = await api("POST", "/v1/webhook-endpoints", { url });
  const secret = $("#webhook-secret");
  secret.textContent = `Signing secret (shown once; keep it now): ${endpoint.secret}`;
  secret.hidden = false;
  $("#webhook-url").value = "";
  await loadEndpoints();
}

async function loadDeliveries(endpoint) {
  const page = await api("GET", `/v1/webhook-endpoints/${endpoint.id}/deliveries`);
  $("#deliveries-title").textContent = `Deliveries to ${endpoint.url}`;
  const body = $("#deliveries tbody");
  body.replaceChildren();
  for (const d of page.items) {
    const row = document.createElement("tr");
    cell(row, `${d.kind} (job ${d.job_id})`);
    cell(row, d.succeeded ? "delivered" : "failed");
    cell(row, d.attempt).className = "num";
    cell(row, d.status_code ? `HTTP ${d.status_code}` : d.error || "");
    cell(row, when(d.at));
    body.append(row);
  }
  if (!page.items.length) {
    const row = document.createElement("tr");
    cell(row, "No deliveries yet.").colSpan = 5;
    body.append(row);
  }
  $("#deliveries-box").hidden = false;
}

// ---- admin -------------------------------------------------------------------------------------

async function loadAdmin() {
  await Promise.all([loadUsers(), loadReports()]);
}

async function loadUsers() {
  const email = $("#users-email").value.trim();
  const page = await api("GET", `/v1/admin/users?limit=50${email ? `&email=${encodeURIComponent(email)}` : ""}`);
  const body = $("#users tbody");
  body.replaceChildren();
  for (const user of page.items) {
    const row = document.createElement("tr");
    cell(row, user.username);
    cell(row, user.email);
    cell(row, user.role);
    cell(row, user.credits).className = "num";
    cell(row, user.id);
    body.append(row);
  }
}

async function loadReports() {
  const page = await api("GET", "/v1/admin/reports");
  const body = $("#reports tbody");
  body.replaceChildren();
  for (const c of page.items) {
    const row = document.createElement("tr");
    cell(row, `${c.target_type} ${c.target_id}`);
    cell(row, `${c.reports_count}: ${Object.entries(c.reasons).map(([r, n]) => `${r} ×${n}`).join(", ")}`);
    cell(row, c.status);
    cell(row, when(c.last_reported_at));
    const actions = cell(row, "");
    if (c.status === "open") {
      for (const verb of ["dismiss", "takedown"]) {
        actions.append(button(verb === "dismiss" ? "Dismiss" : "Take down", async () => {
          await api("POST", `/v1/admin/reports/${encodeURIComponent(c.id)}/resolve`, { action: verb });
          await loadReports();
        }, `${verb} the report on ${c.target_type} ${c.target_id}`));
      }
    }
    body.append(row);
  }
}

async function grant() {
  const granted = await api("POST", "/v1/admin/credits/grants", {
    user_id: $("#grant-user").value.trim(),
    amount: Number($("#grant-amount").value),
    note: $("#grant-note").value.trim() || null,
  });
  notice(`Granted ${granted.amount} credits; the balance is ${granted.balance}.`);
  await loadUsers();
}

// ---- start -------------------------------------------------------------------------------------

async function loadConfig() {
  config = await api("GET", "/console/config.json", undefined, { retry: false });
  const select = $("#upscale-model");
  select.replaceChildren();
  for (const model of config.upscale_models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} (×${model.scale})`;
    option.selected = model.name === config.default_upscale_model;
    select.append(option);
  }
  const names = { google: "Google", kakao: "Kakao", naver: "Naver" };
  const buttons = $("#oauth-buttons");
  buttons.replaceChildren();
  if (config.browser_sign_in) {
    for (const provider of config.oauth_providers) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `oauth-${provider}`;
      b.textContent = names[provider] || provider;
      b.addEventListener("click", action(b, () => startBrowserSignIn(provider)));
      buttons.append(b);
    }
  }
  $("#oauth").hidden = !buttons.children.length;
}

function wire() {
  const on = (selector, run) => {
    const form = $(selector);
    form.addEventListener("submit", action(form, run));
  };
  on("#signin-form", async () => {
    const login = $("#signin-email").value.trim();
    const body = { password: $("#signin-password").value };
    if (login.includes("@")) body.email = login;
    else body.username = login;
    await signedIn(await api("POST", "/v1/auth/login", body, { retry: false }));
    $("#signin-password").value = "";
  });
  on("#register-form", async () => {
    const tokens = await api("POST", "/v1/auth/register", {
      email: $("#register-email").value.trim(),
      username: $("#register-username").value.trim(),
      password: $("#register-password").value,
    }, { retry: false });
    $("#register-password").value = "";
    await signedIn(tokens);
  });
  on("#upscale-form", upscale);
  on("#bestcut-form", bestCut);
  on("#generate-form", generate);
  on("#webhook-form", addEndpoint);
  on("#grant-form", grant);
  on("#users-form", loadUsers);
  $("#compare-position").addEventListener("input", setComparison);
  $("#claim-daily").addEventListener("click", action($("#claim-daily"), async () => {
    const claimed = await api("POST", "/v1/credits/daily/claim");
    notice(`Claimed ${claimed.credits ?? ""} credits.`);
    await loadAccount();
  }));
  $("#sign-out").addEventListener("click", action($("#sign-out"), async () => {
    const refresh = session.refresh;
    try {
      if (refresh) await api("POST", "/v1/auth/logout", { refresh_token: refresh }, { retry: false });
    } finally {
      signedOut("Signed out.");
    }
  }));
  $("#generate-task").addEventListener("change", () => {
    const models = { text_to_image: "fal-ai/flux/dev", music: "fal-ai/stable-audio" };
    $("#generate-model").value = models[$("#generate-task").value] || "";
  });
  window.addEventListener("hashchange", () => {
    clearError();
    notice("");
    show();
    $("#main").focus();
  });
}

async function start() {
  // A request this page's policy refused (a host other than the API): shown, and kept on the
  // page for its tests to read.
  document.addEventListener("securitypolicyviolation", (event) => {
    const blocked = JSON.parse(document.body.dataset.blocked || "[]");
    blocked.push(event.blockedURI);
    document.body.dataset.blocked = JSON.stringify(blocked);
    showError(new Problem(0, `This page refused to reach ${event.blockedURI}: it talks to this API only.`));
  });
  wire();
  show();
  try {
    await loadConfig();
    await finishBrowserSignIn();
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "true";
}

start();
