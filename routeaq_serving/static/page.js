// The forecast page: draws /api/sites (the grid) and /api/sites/{id} (a site), both in UTC,
// and shows every time in UK local time. Plain DOM, no build step; charts by the vendored uPlot.
"use strict";

const POLLUTANTS = { pm25: "PM2.5", pm10: "PM10", no2: "NO₂", o3: "O₃" };
const UNIT = "µg/m³";
const FEW_FORECASTS = 48;  // skill and coverage from fewer forecasts than this say so
const UK = "Europe/London";
const ukTime = new Intl.DateTimeFormat("en-GB", {
  timeZone: UK, weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const ukAxisDay = new Intl.DateTimeFormat("en-GB", { timeZone: UK, day: "numeric", month: "short" });
const ukAxisHour = new Intl.DateTimeFormat("en-GB", { timeZone: UK, hour: "2-digit", minute: "2-digit" });
const charts = [];

// Axis labels in UK time, British order: the day at midnight, else the hour.
function axisLabels(u, splits) {
  return splits.map((ts) => {
    const hour = ukAxisHour.format(new Date(ts * 1000));
    return hour === "00:00" ? ukAxisDay.format(new Date(ts * 1000)) : hour;
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A time in another year than this one carries its year: "Fri, 1 Aug 2025, 12:00 BST" beside "491 days old".
const ukTimeYear = new Intl.DateTimeFormat("en-GB", {
  timeZone: UK, weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const ukYear = new Intl.DateTimeFormat("en-GB", { timeZone: UK, year: "numeric" });
function fmtTime(iso) {
  if (!iso) return "unknown";
  const t = new Date(iso);
  return (ukYear.format(t) === ukYear.format(new Date()) ? ukTime : ukTimeYear).format(t);
}
const fmtNum = (value) => (value === null || value === undefined ? "no value" : value.toFixed(1));

function fmtAge(hours) {
  if (hours === null || hours === undefined) return "age unknown";
  if (hours < 1) return "less than an hour old";
  if (hours < 48) return `${Math.round(hours)} hours old`;
  return `${Math.round(hours / 24)} days old`;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error : `${url} answered HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return body;
}

function notice(kind, title, text) {
  return el("div", { class: `notice ${kind}`, "data-state": kind === "error" ? "error" : "warning" }, el("strong", {}, title), text ? el("span", {}, text) : null);
}

function band(daqi) {
  if (!daqi) return el("span", { class: "state" }, "No DAQI band");
  const name = daqi.band.toLowerCase().replace(" ", "-");
  return el("span", { class: `band band-${name}`, "data-daqi-index": daqi.index, "data-daqi-band": daqi.band },
    `DAQI ${daqi.index} ${daqi.band}${daqi.indicative ? " (indicative)" : ""}`);
}

function forecastItem(siteId, pollutant, f) {
  return el("li", { class: "forecast", "data-site": siteId, "data-pollutant": pollutant, "data-time": f.time },
    el("span", { class: "when" }, `${fmtTime(f.time)} · ${f.hours_ahead} h ahead`),
    el("span", { class: "value", "data-value": f.pred }, fmtNum(f.pred)), " ", el("span", { class: "unit" }, UNIT), " ",
    el("span", { class: "range", "data-lower": f.lower, "data-upper": f.upper },
      `likely ${fmtNum(f.lower)} to ${fmtNum(f.upper)} (${Math.round(f.interval * 100)}% range)`),
    el("br"), band(f.daqi));
}

// The words for a pollutant without a forecast, or the list of its next hours.
function pollutantState(siteId, p) {
  if (!p.measured) return el("p", { class: "state", "data-state": "not-measured" }, `${POLLUTANTS[p.pollutant]} is not measured at this site.`);
  if (p.feed_stopped) {
    const since = p.newest_observation ? `since ${fmtTime(p.newest_observation)}` : "in the last day of data";
    return el("p", { class: "state stopped", "data-state": "feed-stopped" }, `Feed stopped: no ${POLLUTANTS[p.pollutant]} observation ${since}. No forecast.`);
  }
  if (!p.forecasts.length) return el("p", { class: "state", "data-state": "no-forecast" }, `No forecast: ${p.problem || "none available"}.`);
  return el("ul", { class: "hours" }, p.forecasts.map((f) => forecastItem(siteId, p.pollutant, f)));
}

function statusNotices(data) {
  const status = document.getElementById("status");
  status.replaceChildren();
  if (!data.model_loaded) {
    status.append(notice("error", "No forecast model is loaded, so there are no forecasts to show.", data.reason ? `Reason: ${data.reason}` : ""));
    return;
  }
  if (data.stale) {
    status.append(notice("warning", "The data is stale.",
      `The newest observation at any site is from ${fmtTime(data.newest_observation)} (${fmtAge(data.age_hours)}). ` +
      `Forecasts start from that hour, not from now.`));
  }
  const stopped = data.sites.filter((s) => s.feed_stopped);
  if (stopped.length) {
    status.append(notice("warning", "Some feeds have stopped.", `No recent observations from ${stopped.map((s) => s.site_name || s.site_id).join(", ")}.`));
  }
  if (data.reason) status.append(notice("warning", "Warning from the service.", data.reason));
  status.append(el("p", { class: "meta" }, `Forecasts from the observations up to ${fmtTime(data.forecast_origin)}; page updated ${fmtTime(data.generated_at)}. `,
    el("button", { type: "button", id: "refresh" }, "Refresh")));
  document.getElementById("refresh").addEventListener("click", route);
}

// A daily index in words: "Today Fri 1 Aug: Moderate (index 5, set by ozone) · Moderate or above likely: 98 %".
function dailyIndex(label, d) {
  if (d.index === null) return el("p", { class: "daily", "data-day": d.day }, `${label}: no daily index (too few hours).`);
  const odds = (p) => `${p >= 0.7 ? "likely" : p >= 0.3 ? "possible" : "unlikely"}: ${Math.round(p * 100)} %`;
  const day = new Date(`${d.day}T12:00:00Z`).toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short", year: "numeric" });
  return el("p", { class: "daily", "data-day": d.day, "data-daqi-index": d.index, "data-p-moderate": d.p_moderate_or_above, "data-p-high": d.p_high_or_above },
    el("strong", {}, `${label} ${day}: `), band({ index: d.index, band: d.band, indicative: false }),
    ` set by ${POLLUTANTS[d.set_by] || d.set_by}. Moderate or above ${odds(d.p_moderate_or_above)}; High or above ${odds(d.p_high_or_above)}.`);
}

function siteHeader(site) {
  const label = site.site_name ? `${site.site_name} (${site.site_id})` : site.site_id;
  const age = site.feed_stopped
    ? el("span", { class: "site-age stopped", "data-state": "feed-stopped" }, `Feed stopped: newest observation ${fmtTime(site.newest_observation)}`)
    : el("span", { class: "site-age", "data-age-hours": site.age_hours }, `Newest observation ${fmtTime(site.newest_observation)} (${fmtAge(site.age_hours)})`);
  const days = (site.daily || []).map((d, i) => dailyIndex(i === 0 ? "Today" : "Tomorrow", d));
  return el("th", { scope: "row" }, el("a", { href: `#site=${encodeURIComponent(site.site_id)}` }, label), age, days);
}

function renderGrid(data) {
  const grid = document.getElementById("grid");
  if (!data.model_loaded) {
    grid.replaceChildren(el("p", { "data-state": "no-model" }, "No forecasts: no model is loaded."));
    return;
  }
  const head = el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Site"), Object.values(POLLUTANTS).map((name) => el("th", { scope: "col" }, name))));
  const rows = data.sites.map((site) => el("tr", { "data-site": site.site_id }, siteHeader(site),
    site.pollutants.map((p) => el("td", { "data-label": POLLUTANTS[p.pollutant], "data-pollutant": p.pollutant }, pollutantState(site.site_id, p)))));
  grid.replaceChildren(el("p", { class: "meta" }, `Concentrations in ${UNIT}. Select a site for its last 7 days and how well past forecasts did.`),
    el("table", { class: "grid" }, head, el("tbody", {}, rows)));
}

function skillText(s) {
  if (!s.hours) return el("p", { class: "skill", "data-skill-hours": 0 }, "Not enough forecasts with observations in the last 7 days to score the model.");
  const verdict = s.skill === null ? "" : s.skill > 0 ? " (better than persistence)" : " (no better than persistence)";
  return el("p", { class: "skill", "data-skill-hours": s.hours, "data-mae-forecast": s.mae_forecast, "data-mae-persistence": s.mae_persistence, "data-skill": s.skill },
    `Recent skill over ${s.hours} hours (${fmtTime(s.first)} to ${fmtTime(s.last)}): average error `,
    el("span", { class: "mae-forecast" }, fmtNum(s.mae_forecast)), ` ${UNIT}, against `,
    el("span", { class: "mae-persistence" }, fmtNum(s.mae_persistence)), ` ${UNIT} for persistence; skill `,
    el("span", { class: "skill-value" }, s.skill === null ? "not defined" : s.skill.toFixed(2)), `${verdict}. ` +
    `The observation was inside the forecast range in ${Math.round(s.interval_coverage * 100)}% of these hours.`,
    s.hours < FEW_FORECASTS ? el("strong", { class: "few" }, ` Only ${s.hours} forecasts: too few to judge the model by.`) : null,
    s.interval_coverage < 0.75 || s.interval_coverage > 0.85
      ? el("strong", { class: "coverage-off" }, ` That is outside the 75-85% expected of an 80% range.`) : null);
}

function chartData(p) {
  const points = p.history.map((h) => ({ time: h.time, observed: h.observed, f: h.forecast }))
    .concat(p.forecasts.map((f) => ({ time: f.time, observed: null, f })));
  const xs = points.map((q) => Date.parse(q.time) / 1000);
  const pick = (key) => points.map((q) => (q.f ? q.f[key] : null));
  return [xs, points.map((q) => q.observed), pick("pred"), pick("lower"), pick("upper")];
}

function drawChart(container, p) {
  if (typeof uPlot === "undefined") {
    container.append(el("p", { class: "state" }, "The chart library did not load; the numbers are in the table below."));
    return;
  }
  const options = {
    width: Math.max(container.clientWidth, 280),
    height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), UK),
    scales: { x: { time: true } },
    axes: [{ values: axisLabels, space: 70 }, { label: UNIT, size: 60 }],
    series: [
      { label: "UK time" },
      { label: "Observed", stroke: "#1b1f24", width: 2 },
      { label: "Forecast", stroke: "#0b57d0", width: 2, dash: [6, 4] },
      { label: "Range low", stroke: "rgba(11, 87, 208, 0.45)", width: 1 },
      { label: "Range high", stroke: "rgba(11, 87, 208, 0.45)", width: 1 },
    ],
    bands: [{ series: [4, 3], fill: "rgba(11, 87, 208, 0.15)" }],
  };
  charts.push({ chart: new uPlot(options, chartData(p), container), container });
}

function historyTable(p) {
  const rows = p.history.filter((h) => h.observed !== null || h.forecast).map((h) => el("tr", {},
    el("td", {}, fmtTime(h.time)), el("td", {}, fmtNum(h.observed)),
    el("td", {}, h.forecast ? fmtNum(h.forecast.pred) : "no forecast"),
    el("td", {}, h.forecast ? `${fmtNum(h.forecast.lower)} to ${fmtNum(h.forecast.upper)}` : ""),
    el("td", {}, h.forecast ? (h.forecast.source === "served" ? "served" : "champion as of that hour") : "")));
  return el("details", {}, el("summary", {}, "The chart's numbers as a table"),
    el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ["Hour", `Observed (${UNIT})`, "Forecast", "Range", "Forecast made by"].map((t) => el("th", { scope: "col" }, t)))), el("tbody", {}, rows)));
}

// The cleanest hours for an activity: /api/best-time, in words, beside now and the worst window.
function windowText(w) {
  const values = Object.entries(w.means).map(([p, v]) => `${POLLUTANTS[p]} about ${Math.round(v)}`).join(", ");
  return `${fmtTime(w.start)} to ${ukAxisHour.format(new Date(w.end))}: ${w.band} (${values} ${UNIT})`;
}

async function renderBestTime(box, siteId) {
  const hours = box.querySelector("select[name=hours]").value;
  const within = box.querySelector("select[name=within]").value;
  const answer = box.querySelector(".best-time-answer");
  const asked = (box.asked = (box.asked || 0) + 1);  // only the newest question's answer is shown
  try {
    const data = await getJSON(`/api/best-time?site_id=${encodeURIComponent(siteId)}&hours=${hours}&within=${within}`);
    if (asked !== box.asked) return;
    answer.replaceChildren(
      el("p", { class: "best", "data-start": data.best.start, "data-band": data.best.band }, el("strong", {}, `Cleanest ${hours} h in the next ${within} h: `), windowText(data.best)),
      el("p", { class: "now", "data-start": data.now.start }, "Starting now: ", windowText(data.now)),
      el("p", { class: "worst", "data-start": data.worst.start }, "Worst: ", windowText(data.worst)),
    );
  } catch (error) {
    if (asked !== box.asked) return;
    answer.replaceChildren(notice("warning", "No cleanest hours for this site.", error.message));
  }
  box.dataset.ready = "true";
}

function bestTimeBox(siteId) {
  const choose = (name, label, options, chosen) => el("label", {}, `${label} `,
    el("select", { name }, options.map((o) => el("option", { value: o, selected: o === chosen }, `${o} hours`))));
  const box = el("section", { class: "best-time", "aria-label": "Cleanest hours" }, el("h3", {}, "When to go out"),
    el("form", {}, choose("hours", "Activity", [1, 2, 3], 2), " ", choose("within", "in the next", [24, 48], 24)),
    el("div", { class: "best-time-answer", role: "status", "aria-live": "polite" }, "Finding the cleanest hours…"),
    el("p", { class: "legend-note" }, "Judged by the most polluting pollutant's forecast against where its Moderate band begins; roadside sites read higher than background sites nearby."));
  box.addEventListener("change", () => { box.dataset.ready = "false"; renderBestTime(box, siteId); });
  renderBestTime(box, siteId);
  return box;
}

async function renderSite(siteId) {
  const box = document.getElementById("site");
  const title = document.getElementById("site-title");
  title.textContent = siteId;
  box.replaceChildren(el("p", {}, "Loading…"));
  charts.length = 0;
  let data;
  try {
    data = await getJSON(`/api/sites/${encodeURIComponent(siteId)}`);
  } catch (error) {
    const words = error.status === 503 ? "No forecast model is loaded, so this site has no forecasts." : `Could not load this site: ${error.message}`;
    box.replaceChildren(notice("error", words, error.status === 503 ? error.message : ""));
    return;
  }
  title.textContent = data.site_name ? `${data.site_name} (${data.site_id})` : data.site_id;
  box.replaceChildren(el("p", { class: "meta" }, `Newest observation ${fmtTime(data.newest_observation)} (${fmtAge(data.age_hours)}). The last 7 days up to ${fmtTime(data.forecast_origin)}, then the next hours.`), bestTimeBox(data.site_id));
  for (const p of data.pollutants) {
    const panel = el("section", { class: "pollutant-panel", "data-pollutant": p.pollutant, "aria-label": POLLUTANTS[p.pollutant] }, el("h3", {}, POLLUTANTS[p.pollutant]));
    box.append(panel);
    panel.append(pollutantState(data.site_id, p));
    if (!p.measured) continue;
    const chart = el("div", { class: "chart", role: "img", "aria-label": `${POLLUTANTS[p.pollutant]} at ${data.site_id}: observed and forecast values with the forecast range, last 7 days and the next hours` });
    panel.append(el("figure", {}, chart, el("figcaption", { class: "legend-note" }, "Solid line: observed. Dashed line: forecast. Shaded: the forecast's likely range.")));
    drawChart(chart, p);
    panel.append(skillText(p.skill), historyTable(p));
  }
}

async function renderOverview() {
  try {
    const data = await getJSON("/api/sites");
    statusNotices(data);
    renderGrid(data);
  } catch (error) {
    document.getElementById("status").replaceChildren(notice("error", "Could not load the forecasts.", error.message));
    document.getElementById("grid").replaceChildren();
  }
}

async function route() {
  const match = location.hash.match(/^#site=(.+)$/);
  const grid = document.getElementById("grid-view");
  const site = document.getElementById("site-view");
  await renderOverview();
  if (match) {
    grid.hidden = true;
    site.hidden = false;
    await renderSite(decodeURIComponent(match[1]));
    document.getElementById("site-title").focus();
  } else {
    site.hidden = true;
    grid.hidden = false;
  }
  // Which view is ready, for scripts and tests that follow a navigation.
  document.body.dataset.route = location.hash;
  document.body.dataset.ready = "true";
}

window.addEventListener("hashchange", () => { document.body.dataset.ready = "false"; route(); });
window.addEventListener("resize", () => {
  for (const { chart, container } of charts) chart.setSize({ width: Math.max(container.clientWidth, 280), height: 260 });
});
route();
